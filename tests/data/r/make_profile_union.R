#!/usr/bin/env Rscript
## make_profile_union.R
##
## lme4's confint(profile(m)) where the profiled ML deviance has two local minima:
## writes tests/data/profile_union.json for the data sets in
## tests/data/profile_union.csv (column "set") and for the seed data
## (tests/data/reference/seed.csv). Each REML fit is lme4's global one (restarted
## from the best point of a theta grid when the default start stops elsewhere);
## lme4 profiles its ML deviance from the REML estimate, locally. Where that
## profile fails (it meets a lower deviance in another basin), the error message
## is recorded instead of the intervals.
##
## Run from the repository root:
##     Rscript tests/data/r/make_profile_union.R

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e4), length.out = 3000)))

global_fit <- function(formula, data) {
  m <- lmer(formula, data = data, REML = TRUE)
  dev <- lmer(formula, data = data, REML = TRUE, devFunOnly = TRUE)
  best <- THETA_GRID[which.min(vapply(THETA_GRID, dev, numeric(1)))]
  m2 <- lmer(formula, data = data, REML = TRUE, start = list(theta = best))
  if (REMLcrit(m2) < REMLcrit(m) - 1e-7) m2 else m
}

## confint(profile(m)) interpolates the profile with splines through points
## delta.cutoff apart (in the signed square root of the deviance change); the
## default 1/8 is coarse where the profile bends sharply, as it does next to a
## second minimum, so the intervals are also computed with 1/128 ("fine").
intervals_of <- function(m, ...) {
  ci <- tryCatch(suppressWarnings(confint(profile(m, ...), level = 0.95)),
                 error = function(e) conditionMessage(e))
  if (is.character(ci)) return(list(error = ci))
  list(intervals = lapply(seq_len(nrow(ci)), function(i)
    list(parameter = rownames(ci)[i], lower = unname(ci[i, 1]), upper = unname(ci[i, 2]))))
}

profile_record <- function(formula, data) {
  m <- global_fit(formula, data)
  list(theta = unname(getME(m, "theta")), fixef = as.list(fixef(m)),
       sd_group = sqrt(unname(VarCorr(m)[[1]][1])), sigma = sigma(m),
       default = intervals_of(m),
       fine = intervals_of(m, delta.cutoff = 1 / 128, maxpts = 1000))
}

out <- list()
sets <- read.csv(file.path("tests", "data", "profile_union.csv"), stringsAsFactors = FALSE)
for (s in unique(sets$set)) {
  d <- sets[sets$set == s, ]
  d$g <- factor(d$g)
  out[[s]] <- profile_record(y ~ x + (1 | g), d)
}
seed <- read.csv(file.path("tests", "data", "reference", "seed.csv"))
seed$f <- factor(seed$f)
out$seed <- profile_record(y ~ x + (1 | f), seed)
out[["_about"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path("tests", "data", "profile_union.json"))
