# Kenward-Roger (pbkrtest through lmerTest) on an unbalanced nested design with several
# terms: the school x intake x sex cells of mlmRev's Exam (cell means of normexam and
# standLRT), normexam ~ standLRT + sex + (1 | school/intake), REML, unweighted. The example
# of docs/several_terms.md; tests/varcomp/test_terms_kenward_roger.py builds the same cells.
#
# Run from the repository root:
#
#     Rscript tests/data/r/make_terms_kr_exam_reference.R
#
# Writes tests/data/multi/kr_exam_reference.json.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(mlmRev)
  library(jsonlite)
})

cells <- aggregate(cbind(normexam, standLRT) ~ school + intake + sex, data = Exam, FUN = mean)
m <- lmer(normexam ~ standLRT + sex + (1 | school/intake), data = cells, REML = TRUE)
kr <- summary(m, ddf = "Kenward-Roger")$coefficients
out <- list(formula = "normexam ~ standLRT + sex + (1 | school/intake)", nobs = nrow(cells),
            criterion = REMLcrit(m),
            kenward_roger = list(term = rownames(kr), estimate = unname(kr[, "Estimate"]),
                                 se = unname(kr[, "Std. Error"]), df = unname(kr[, "df"])),
            about = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                         lmerTest = as.character(packageVersion("lmerTest")),
                         pbkrtest = as.character(packageVersion("pbkrtest")),
                         script = "tests/data/r/make_terms_kr_exam_reference.R"))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/data/multi/kr_exam_reference.json")
