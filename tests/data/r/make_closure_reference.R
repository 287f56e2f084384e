#!/usr/bin/env Rscript
## make_closure_reference.R
##
## Writes tests/data/closure_reference.json: lme4's fits of the small cases behind
## the last fixes of issue 10 (the metamorphic suite's findings).
##
## - two_groups: y ~ x + (1|g) with two groups and x = 0, 1, 2 in each (as many
##   groups as fixed columns); the REML criterion does not depend on a shift of x,
##   so this value holds for x + 1e6 too (lme4 itself does not converge there).
## - level_only_in_incomplete_rows: sim_unbalanced with x2 missing wherever
##   cat == "a", cat a factor with levels a, b, c: model.frame drops the rows
##   first and the unused level a after, so b is the reference level.
## - one_row_at_a_new_level: sim_unbalanced and a copy of its sixth row at a new
##   level "x" of cat: x1:catx is x1 times catx (one row), an exact linear
##   combination, and lme4 drops it.
##
## Run from the repository root:
##     Rscript tests/data/r/make_closure_reference.R

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

fit_values <- function(m) {
  list(
    criterion = unname(REMLcrit(m)),
    fixef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    sigma2 = sigma(m)^2,
    var_group = as.data.frame(VarCorr(m))$vcov[1]
  )
}

out <- list()

two <- data.frame(y = c(1, 2, 4, 3, 6, 5), x = c(0, 1, 2, 0, 1, 2), g = c("a", "a", "a", "b", "b", "b"))
out$two_groups <- fit_values(lmer(y ~ x + (1 | g), two))

d <- read.csv("tests/data/reference/sim_unbalanced.csv")
incomplete <- d
incomplete$x2[incomplete$cat == "a"] <- NA
incomplete$cat <- factor(incomplete$cat, levels = c("a", "b", "c"))
out$level_only_in_incomplete_rows <- fit_values(lmer(y ~ x1 * cat + x2 + (1 | g), incomplete))

new_level <- rbind(d, transform(d[6, ], cat = "x"))
m <- lmer(y ~ x1 * cat + x2 + (1 | g), new_level)
out$one_row_at_a_new_level <- c(fit_values(m), list(dropped = attr(getME(m, "X"), "col.dropped")))

out$`_about` <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/data/closure_reference.json")
