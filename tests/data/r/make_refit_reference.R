# lme4's refit(m, newresp) on the bundled data sets: tests/data/refit/refit_reference.json.
# Run from the repository root: Rscript tests/data/r/make_refit_reference.R
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
data_dir <- "reml_engine/datasets/data"
read <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = TRUE)
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-3, rhoend = 1e-10, maxfun = 1e5))
values <- function(r) {
  list(criterion = if (isREML(r)) REMLcrit(r) else deviance(r), fixef = as.list(fixef(r)),
       theta = unname(getME(r, "theta")), sigma = sigma(r), nobs = nobs(r),
       se = as.list(sqrt(diag(as.matrix(vcov(r))))))
}
# lme4's refit(), and lmer() on the data with the response replaced (update(m, data = ...)):
# for ML fits they agree; for REML fits lme4 1.1-31's refit() reports another criterion and
# theta (sleepstudy refitted to its own response: 1795.17 where the fit says 1786.47).
one <- function(m, newresp, data, response) {
  d <- data; d[[response]] <- newresp
  list(refit = values(refit(m, newresp = newresp, control = ctrl)),
       direct = values(update(m, data = d, control = ctrl)))
}
out <- list()
sleep <- read("sleepstudy"); sleep$Subject <- factor(sleep$Subject)
for (reml in c(TRUE, FALSE)) {
  m <- lmer(Reaction ~ Days + (1|Subject), sleep, REML = reml, control = ctrl)
  out[[paste0("sleepstudy_log_", if (reml) "reml" else "ml")]] <- c(
    list(formula = "Reaction ~ Days + (1|Subject)", data = "sleepstudy", newresp = "log(Reaction)", REML = reml),
    one(m, log(sleep$Reaction), sleep, "Reaction"))
}
# Rows dropped for a missing predictor: newresp as long as the data (lme4 drops the same rows).
holes <- sleep; holes$Days[c(3, 50, 51, 170)] <- NA
m <- lmer(Reaction ~ Days + (1|Subject), holes, control = ctrl)
out$sleepstudy_dropped_rows <- c(
  list(formula = "Reaction ~ Days + (1|Subject)", data = "sleepstudy", missing_days = c(3, 50, 51, 170),
       newresp = "sqrt(Reaction)", REML = TRUE),
  one(m, sqrt(holes$Reaction), holes, "Reaction"))
pastes <- read("pastes")
m <- lmer(strength ~ 1 + (1|batch/cask), pastes, control = ctrl)
out$pastes_rev <- c(list(formula = "strength ~ 1 + (1|batch/cask)", data = "pastes", newresp = "rev(strength)",
                         REML = TRUE), one(m, rev(pastes$strength), pastes, "strength"))
pen <- read("penicillin")
m <- lmer(diameter ~ 1 + (1|plate) + (1|sample), pen, REML = FALSE, control = ctrl)
out$penicillin_square_ml <- c(list(formula = "diameter ~ 1 + (1|plate) + (1|sample)", data = "penicillin",
                                   newresp = "diameter^2 / 10", REML = FALSE), one(m, pen$diameter^2 / 10, pen, "diameter"))
out$`_about` <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                     script = "tests/data/r/make_refit_reference.R")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/data/refit/refit_reference.json")
