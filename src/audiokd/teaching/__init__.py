"""Where the student's teacher outputs come from: one trained teacher, fold teachers, an ensemble of members,
or a CSV of outputs from any model. Every kind ends as the same teacher folder with its outputs cache
(:mod:`audiokd.distill.teacher_cache`), which is all distill reads."""
