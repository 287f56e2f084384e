# Reference values for prior weights and offsets with several random-intercept terms.
#
# Real data (mlmRev's ScotsSec and Exam) aggregated to cell means, weighted by the cell
# sizes: lme4's precision weights (residual variance sigma2 / w). Writes the cell data
# as CSV and lme4's values as JSON under tests/data/multi_weights/. Run from the
# repository root:
#
#     Rscript tests/data/r/make_multi_weights_reference.R
suppressPackageStartupMessages({
  library(lme4)
  library(mlmRev)
  library(jsonlite)
})

out_dir <- "tests/data/multi_weights"
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

# ScotsSec: pupils in primary x secondary schools (crossed); cells of primary, second, sex.
scots <- aggregate(cbind(attain, verbal, social) ~ primary + second + sex, data = ScotsSec, FUN = mean)
scots$n <- aggregate(attain ~ primary + second + sex, data = ScotsSec, FUN = length)$attain
scots$social_offset <- 0.05 * scots$social
scots <- scots[order(scots$primary, scots$second, scots$sex), ]
write.csv(scots, file.path(out_dir, "scotssec_cells.csv"), row.names = FALSE)

# Exam: pupils in schools; cells of school x intake band x sex, model (1 | school/intake)
# (nested: intake bands within schools).
exam <- aggregate(cbind(normexam, standLRT) ~ school + intake + sex, data = Exam, FUN = mean)
exam$n <- aggregate(normexam ~ school + intake + sex, data = Exam, FUN = length)$normexam
exam <- exam[order(exam$school, exam$intake, exam$sex), ]
write.csv(exam, file.path(out_dir, "exam_cells.csv"), row.names = FALSE)

cases <- list(
  scotssec = list(data = scots, file = "scotssec_cells.csv",
                  formula = attain ~ verbal + sex + (1 | primary) + (1 | second), offset = FALSE),
  scotssec_offset = list(data = scots, file = "scotssec_cells.csv",
                         formula = attain ~ verbal + sex + offset(social_offset) + (1 | primary) + (1 | second),
                         offset = TRUE),
  exam = list(data = exam, file = "exam_cells.csv",
              formula = normexam ~ standLRT + sex + (1 | school/intake), offset = FALSE)
)

# Thetas at which the criterion is also recorded (lme4's devfun), boundaries included.
probe_thetas <- list(c(0.5, 2), c(0, 1.5), c(1.2, 0), c(0, 0), c(3, 0.1))

fit_values <- function(case, REML) {
  m <- lmer(case$formula, data = case$data, weights = n, REML = REML)
  devfun <- lmer(case$formula, data = case$data, weights = n, REML = REML, devFunOnly = TRUE)
  re <- ranef(m, condVar = TRUE)
  ranef_out <- list()
  for (term in names(re)) {
    cv <- attr(re[[term]], "postVar")
    ranef_out[[term]] <- list(levels = rownames(re[[term]]), mode = re[[term]][, 1], condvar = as.numeric(cv))
  }
  probes <- lapply(probe_thetas, function(th) list(theta = th, criterion = devfun(th)))
  list(
    theta = setNames(as.list(getME(m, "theta")), names(getME(m, "theta"))),
    criterion = if (REML) REMLcrit(m) else deviance(m),
    fixef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    vcov = unname(as.matrix(vcov(m))),
    sigma2 = sigma(m)^2,
    nobs = nobs(m),
    ngroups = as.list(ngrps(m)),
    ranef = ranef_out,
    probes = probes
  )
}

result <- list()
for (name in names(cases)) {
  case <- cases[[name]]
  result[[name]] <- list(
    file = case$file,
    formula = paste(deparse(case$formula), collapse = " "),
    weights = "n",
    reml = fit_values(case, TRUE),
    ml = fit_values(case, FALSE)
  )
}
result[["_about"]] <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  mlmRev = as.character(packageVersion("mlmRev")),
  probe_thetas = probe_thetas,
  note = "theta in lme4's order (getME(m, 'theta')); criterion is REMLcrit() or deviance(); probes are devfun(theta)"
)
writeLines(toJSON(result, digits = NA, auto_unbox = TRUE, pretty = TRUE), file.path(out_dir, "reference.json"))
