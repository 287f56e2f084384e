# lmerTest's summary() with each of its ddf choices (issue 14: m.summary(ddf=...)):
# "Satterthwaite" (the default), "Kenward-Roger" (pbkrtest's adjusted covariance: its
# standard errors and df) and "lme4" (lme4's table, without df and p). Run from the
# repository root:
#
#     Rscript tests/data/r/make_summary_ddf_reference.R
#
# Writes tests/data/reference/summary_ddf_reference.json.
suppressPackageStartupMessages({ library(lme4); library(lmerTest); library(jsonlite) })

Orthodont <- as.data.frame(nlme::Orthodont)
Orthodont$Subject <- factor(as.character(Orthodont$Subject))
fits <- list(
  sleepstudy_reml = lmer(Reaction ~ Days + (1 | Subject), sleepstudy),
  orthodont_reml = lmer(distance ~ age + Sex + (1 | Subject), Orthodont)
)
printed <- function(m, ddf) paste(capture.output(print(summary(m, ddf = ddf))), collapse = "\n")
ref <- lapply(fits, function(m) {
  kr <- summary(m, ddf = "Kenward-Roger")$coefficients
  list(
    Satterthwaite = printed(m, "Satterthwaite"),
    `Kenward-Roger` = printed(m, "Kenward-Roger"),
    lme4 = printed(m, "lme4"),
    kenward_roger_se = unname(kr[, "Std. Error"]),
    kenward_roger_df = unname(kr[, "df"])
  )
})
ref$`_about` <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                     lmerTest = as.character(packageVersion("lmerTest")),
                     pbkrtest = as.character(packageVersion("pbkrtest")),
                     script = "tests/data/r/make_summary_ddf_reference.R")
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/data/reference/summary_ddf_reference.json")
