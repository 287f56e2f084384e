# Reference values for rl.lmer with several random-intercept terms, prior weights and
# offsets (the front end of issue 12): lme4's fits of
#   * Pastes, strength ~ 1 + offset(z) + (1 | batch/cask), weights = w (nested, both);
#   * Penicillin, diameter ~ 1 + (1 | plate) + (1 | sample), weights = w (crossed);
#   * Exam cells (mlmRev), normexam ~ standLRT + sex + (1 | school), weights = n (one term).
# w and z are made up from the row number (deterministic). Writes the data as CSV and
# lme4's values (criterion, fixef, se, variances, sigma2, fitted, residuals) as JSON under
# tests/data/terms_front/ (anova.json: lme4's anova() of nested fits of
# tests/data/multi/sim_subjects_items.csv). Run from the repository root:
#
#     Rscript tests/data/r/make_terms_front_reference.R
suppressPackageStartupMessages({
  library(lme4)
  library(mlmRev)
  library(jsonlite)
})

out_dir <- "tests/data/terms_front"
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

pastes <- Pastes[, c("strength", "batch", "cask")]
i <- seq_len(nrow(pastes))
pastes$w <- 1 + (i %% 3)
pastes$z <- 0.1 * ((i %% 5) - 2)
write.csv(pastes, file.path(out_dir, "pastes_wz.csv"), row.names = FALSE)

pen <- Penicillin
i <- seq_len(nrow(pen))
pen$w <- 0.5 + (i %% 4) / 2
write.csv(pen, file.path(out_dir, "penicillin_w.csv"), row.names = FALSE)

exam <- aggregate(cbind(normexam, standLRT) ~ school + sex, data = Exam, FUN = mean)
exam$n <- aggregate(normexam ~ school + sex, data = Exam, FUN = length)$normexam
exam <- exam[order(exam$school, exam$sex), ]
write.csv(exam, file.path(out_dir, "exam_school_sex.csv"), row.names = FALSE)

cases <- list(
  pastes_wz = list(data = pastes, file = "pastes_wz.csv", weights = "w",
                   formula = strength ~ 1 + offset(z) + (1 | batch/cask)),
  penicillin_w = list(data = pen, file = "penicillin_w.csv", weights = "w",
                      formula = diameter ~ 1 + (1 | plate) + (1 | sample)),
  exam_one_term = list(data = exam, file = "exam_school_sex.csv", weights = "n",
                       formula = normexam ~ standLRT + sex + (1 | school))
)

fit_values <- function(case, REML) {
  case$data$.w <- case$data[[case$weights]]
  m <- lmer(case$formula, data = case$data, weights = .w, REML = REML)
  vc <- as.data.frame(VarCorr(m))
  list(
    criterion = if (REML) REMLcrit(m) else deviance(m),
    fixef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    var = setNames(as.list(vc$vcov[vc$grp != "Residual"]), vc$grp[vc$grp != "Residual"]),
    sigma2 = sigma(m)^2,
    nobs = nobs(m),
    ngroups = as.list(ngrps(m)),
    fitted = unname(fitted(m)),
    resid = unname(residuals(m)),
    resid_unweighted = unname(case$data[[all.vars(case$formula)[1]]] - fitted(m)),
    predict_population = unname(predict(m, re.form = NA))
  )
}

result <- list()
for (name in names(cases)) {
  case <- cases[[name]]
  result[[name]] <- list(file = case$file, formula = paste(deparse(case$formula), collapse = " "),
                         weights = case$weights, reml = fit_values(case, TRUE), ml = fit_values(case, FALSE))
}
result[["_about"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                           note = "criterion is REMLcrit() or deviance(); resid is residuals(m)")
write_json(result, file.path(out_dir, "reference.json"), digits = NA, auto_unbox = TRUE, pretty = TRUE)

# Likelihood-ratio tests between nested fits with several terms (anova refits by ML).
sim <- read.csv("tests/data/multi/sim_subjects_items.csv", colClasses = c(subj = "character", item = "character"))
m_subj <- lmer(y ~ x + cond + (1 | subj), data = sim)
m_both <- lmer(y ~ x + cond + (1 | subj) + (1 | item), data = sim)
m_nocond <- lmer(y ~ x + (1 | subj) + (1 | item), data = sim)
table_values <- function(a) {
  a <- as.data.frame(a)
  list(npar = a$npar, AIC = a$AIC, BIC = a$BIC, logLik = a$logLik, deviance = a$deviance,
       Chisq = a$Chisq[2], Df = a$Df[2], p = a[["Pr(>Chisq)"]][2])
}
anova_out <- list(
  add_item = c(list(models = c("y ~ x + cond + (1|subj)", "y ~ x + cond + (1|subj) + (1|item)")),
               table_values(anova(m_subj, m_both))),
  drop_cond = c(list(models = c("y ~ x + (1|subj) + (1|item)", "y ~ x + cond + (1|subj) + (1|item)")),
                table_values(anova(m_nocond, m_both)))
)
write_json(anova_out, file.path(out_dir, "anova.json"), digits = NA, auto_unbox = TRUE, pretty = TRUE)
