# Reference values for the statsmodels/broom/lme4 names of a fit (issue 14): params, bse,
# tvalues, pvalues (lmerTest, Satterthwaite), t intervals on Satterthwaite df, logLik,
# sigma, df.residual, coef(), fitted/resid with na.exclude, the printed summary(), and
# lme4's update() and drop1(test = "Chisq"). Run from the repository root:
#
#     Rscript tests/data/r/make_names_reference.R
#
# Writes tests/data/reference/names_reference.json. The data are R's own (lme4's
# sleepstudy and Dyestuff, nlme's Orthodont), which rl.datasets ships in R's row order.
# None of these fits has more than one local optimum, so lmer's default start gives the
# global one.
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(jsonlite)
})

Orthodont <- as.data.frame(nlme::Orthodont)
Orthodont$Subject <- factor(as.character(Orthodont$Subject))

named <- function(x) as.list(x)

fit_values <- function(m, alpha = c(0.05, 0.10)) {
  s <- summary(m)$coefficients
  vc <- as.data.frame(VarCorr(m))
  out <- list(
    REML = isREML(m),
    params = named(fixef(m)),
    bse = named(s[, "Std. Error"]),
    tvalues = named(s[, "t value"]),
    df = named(s[, "df"]),
    pvalues = named(s[, "Pr(>|t|)"]),
    sd = setNames(as.list(vc$sdcor), vc$grp),
    variance = setNames(as.list(vc$vcov), vc$grp),
    sigma = sigma(m),
    logLik = as.numeric(logLik(m)),
    AIC = AIC(m), BIC = BIC(m),
    REMLcrit = if (isREML(m)) REMLcrit(m) else NULL,
    deviance = if (isREML(m)) NULL else deviance(m),
    nobs = nobs(m),
    df_residual = df.residual(m),
    coef = lapply(as.data.frame(coef(m)[[1]]), identity),
    coef_levels = rownames(coef(m)[[1]]),
    ranef = named(setNames(ranef(m)[[1]][, 1], rownames(ranef(m)[[1]]))),
    fitted = unname(fitted(m)),
    resid = unname(resid(m)),
    wald_normal = lapply(as.data.frame(confint(m, method = "Wald", parm = "beta_", level = 0.95)), identity)
  )
  # t intervals on lmerTest's Satterthwaite df, as contest(..., confint = TRUE) gives them.
  out$conf_int_t <- list()
  for (a in alpha) {
    rows <- lapply(seq_len(nrow(s)), function(j) {
      L <- rep(0, nrow(s)); L[j] <- 1
      ct <- contest1D(m, L, confint = TRUE, level = 1 - a)
      c(ct$lower, ct$upper)
    })
    out$conf_int_t[[format(a)]] <- list(lower = sapply(rows, `[`, 1), upper = sapply(rows, `[`, 2))
  }
  out$summary_text <- paste(capture.output(print(summary(m))), collapse = "\n")
  out
}

ref <- list()
sleep_reml <- lmer(Reaction ~ Days + (1 | Subject), sleepstudy)
sleep_ml <- lmer(Reaction ~ Days + (1 | Subject), sleepstudy, REML = FALSE)
ref$sleepstudy_reml <- fit_values(sleep_reml)
ref$sleepstudy_ml <- fit_values(sleep_ml)
ref$dyestuff_reml <- fit_values(lmer(Yield ~ 1 + (1 | Batch), Dyestuff))
ortho <- lmer(distance ~ age + Sex + (1 | Subject), Orthodont)
ref$orthodont_reml <- fit_values(ortho)
# Small coefficients next to large ones: Days in thousands of days.
small <- transform(sleepstudy, Days = Days * 1000)
ref$sleepstudy_small_reml <- fit_values(lmer(Reaction ~ Days + (1 | Subject), small))

# Missing values: rows 3 and 50 lose the response, row 100 loses Days; na.exclude pads
# fitted() and resid() with NA there (positions are 1-based here, 0-based in Python).
holes <- sleepstudy
holes$Reaction[c(3, 50)] <- NA
holes$Days[100] <- NA
m_holes <- lmer(Reaction ~ Days + (1 | Subject), holes, na.action = na.exclude)
ref$sleepstudy_na <- list(
  na_rows_1based = c(3, 50, 100),
  fitted = fitted(m_holes), resid = resid(m_holes),
  REMLcrit = REMLcrit(m_holes), nobs = nobs(m_holes)
)

# update(): the original is REML; each call refits with one argument changed.
u_ml <- update(sleep_reml, REML = FALSE)
u_formula <- update(sleep_reml, . ~ . - Days)
u_data <- update(sleep_reml, data = subset(sleepstudy, Days >= 2))
crit <- function(m) if (isREML(m)) REMLcrit(m) else deviance(m)
ref$update <- list(
  REML_false = list(criterion = crit(u_ml), params = named(fixef(u_ml))),
  drop_days = list(criterion = crit(u_formula), params = named(fixef(u_formula))),
  days_ge_2 = list(criterion = crit(u_data), params = named(fixef(u_data)), nobs = nobs(u_data))
)

# drop1(test = "Chisq") as lme4 defines it (lmerTest's own drop1 does F tests instead).
drop1_table <- function(m) {
  d <- lme4:::drop1.merMod(m, test = "Chisq")
  list(term = rownames(d), npar = d$npar, AIC = d$AIC, LRT = d$LRT, p = d[["Pr(Chi)"]])
}
ortho_ml <- update(ortho, REML = FALSE)
ref$drop1 <- list(
  orthodont_reml = drop1_table(ortho),
  orthodont_ml = drop1_table(ortho_ml),
  orthodont_interaction = drop1_table(lmer(distance ~ age * Sex + (1 | Subject), Orthodont))
)

ref$`_about` <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  script = "tests/data/r/make_names_reference.R"
)
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null", null = "null"),
           "tests/data/reference/names_reference.json")
