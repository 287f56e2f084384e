# Inference for fits with several random-intercept terms (issue 12): lmerTest's coefficient
# tables (Satterthwaite, and Kenward-Roger through pbkrtest for REML fits), its F-test of a
# contrast, lme4's confint (Wald and profile), the variance components and the numbers
# broom.mixed's tidy()/glance() print, for four cases of tests/data/multi:
#   penicillin          diameter ~ 1 + (1 | plate) + (1 | sample)          (crossed)
#   pastes              strength ~ 1 + (1 | batch/cask)                    (nested)
#   oats                yield ~ nitro + (1 | Block/Variety)                (nested)
#   sim_subjects_items  y ~ x + cond + (1 | subj) + (1 | item)             (crossed, unbalanced)
# lme4's default start reaches the global optimum for each (tests/data/multi/reference.json,
# within 1e-8 of the criterion), so these are the engine's fits. broom.mixed is not
# installed: its tidy() rows are rebuilt from the same quantities (fixed effects from
# lmerTest's coefficient table; ran_pars from as.data.frame(VarCorr(m)), sd__(Intercept)
# per term in lme4's order, then sd__Observation), as are glance()'s columns.
#
# Run from the repository root (about 20 s):
#
#     Rscript tests/data/r/make_terms_inference_reference.R
#
# Writes tests/data/multi/inference_reference.json.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(pbkrtest)
  library(jsonlite)
})

dir <- "tests/data/multi"
cases <- list(
  penicillin = list(file = "penicillin.csv", groups = c("plate", "sample"),
                    formula = diameter ~ 1 + (1 | plate) + (1 | sample)),
  pastes = list(file = "pastes.csv", groups = c("batch", "cask"),
                formula = strength ~ 1 + (1 | batch/cask)),
  oats = list(file = "oats.csv", groups = c("Block", "Variety"),
              formula = yield ~ nitro + (1 | Block/Variety)),
  sim_subjects_items = list(file = "sim_subjects_items.csv", groups = c("subj", "item", "cond"),
                            formula = y ~ x + cond + (1 | subj) + (1 | item),
                            contrast = rbind(c(0, 1, 0), c(0, 0, 1)))
)

coef_rows <- function(table) {
  list(term = rownames(table), estimate = unname(table[, "Estimate"]), se = unname(table[, "Std. Error"]),
       df = unname(table[, "df"]), t = unname(table[, "t value"]), p = unname(table[, "Pr(>|t|)"]))
}

interval_rows <- function(ci) {
  list(parameter = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
}

fit_values <- function(case, data, REML) {
  m <- lmer(case$formula, data = data, REML = REML)
  vc <- as.data.frame(VarCorr(m))
  out <- list(
    criterion = if (REML) REMLcrit(m) else deviance(m),
    theta = unname(getME(m, "theta")),
    varcorr = list(group = vc$grp, variance = vc$vcov, sd = vc$sdcor),
    satterthwaite = coef_rows(summary(m)$coefficients),
    glance = list(nobs = nobs(m), sigma = sigma(m), logLik = as.numeric(logLik(m)), AIC = AIC(m), BIC = BIC(m),
                  criterion = if (REML) REMLcrit(m) else deviance(m), df.residual = df.residual(m)),
    confint_wald = interval_rows(confint(m, method = "Wald", level = 0.95)),
    confint_profile = interval_rows(suppressMessages(confint(m, method = "profile", level = 0.95))),
    # confint's .sig01, .sig02, ... follow the order of the terms in VarCorr (lme4's order).
    confint_profile_groups = c(vc$grp[vc$grp != "Residual"], "Residual"),
    summary_printed = paste(capture.output(print(summary(m))), collapse = "\n")
  )
  if (REML) {
    out$kenward_roger <- coef_rows(summary(m, ddf = "Kenward-Roger")$coefficients)
  }
  if (!is.null(case$contrast)) {
    L <- case$contrast
    out$contrast <- list(L = lapply(seq_len(nrow(L)), function(i) L[i, ]))
    for (ddf in c("Satterthwaite", if (REML) "Kenward-Roger")) {
      test <- contest(m, L, joint = TRUE, ddf = ddf)
      out$contrast[[ddf]] <- list(sum_sq = test[["Sum Sq"]], mean_sq = test[["Mean Sq"]],
                                  num_df = test[["NumDF"]], den_df = test[["DenDF"]],
                                  f_value = test[["F value"]], p_value = test[["Pr(>F)"]])
    }
  }
  out
}

result <- list()
for (name in names(cases)) {
  case <- cases[[name]]
  classes <- setNames(rep("character", length(case$groups)), case$groups)
  data <- read.csv(file.path(dir, case$file), colClasses = classes)
  for (g in case$groups) data[[g]] <- factor(data[[g]])
  result[[name]] <- list(file = case$file, formula = paste(deparse(case$formula), collapse = " "),
                         reml = fit_values(case, data, TRUE), ml = fit_values(case, data, FALSE))
}
result[["_about"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                           lmerTest = as.character(packageVersion("lmerTest")),
                           pbkrtest = as.character(packageVersion("pbkrtest")),
                           script = "tests/data/r/make_terms_inference_reference.R")
writeLines(toJSON(result, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(dir, "inference_reference.json"))
