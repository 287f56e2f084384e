#!/usr/bin/env Rscript
## make_extra_reference.R
##
## Writes tests/data/reference/extra_reference.json: R reference values for
## the parts of reml_engine that go beyond the main fits stored in
## reference.json (type-3 ANOVA, contrasts, nested-model LRTs, fixed-effects /
## between / pooled estimators, Hausman and Mundlak tests, prediction for new
## levels, Wald intervals, Satterthwaite tables for ML fits).
##
## Run from the repository root:
##     Rscript tests/data/r/make_extra_reference.R
##
## Field meanings are documented in tests/data/r/README.md.
##
## Global optimum policy: the profiled REML/ML criterion for some of these data
## sets has more than one local minimum in theta (= sd_group / sigma), and
## lme4's default start (theta = 1) can end at a worse one (for seed_x and
## sim_contextual it stops at the boundary theta = 0 while the global REML
## optimum is interior).  The engine reports the global optimum, so every lmer
## fit here is done twice -- lme4's default start and a restart from the best
## point of a dense theta grid -- and the one with the lower criterion is kept.
## Both criteria are recorded under "_fits".

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)   # Satterthwaite / Kenward-Roger ddf, anova type 3, contest
  library(pbkrtest)   # used by lmerTest for Kenward-Roger
  library(plm)        # phtest (Hausman) for comparison only
  library(jsonlite)
})

t_start <- proc.time()[["elapsed"]]

ref_dir  <- file.path("tests", "data", "reference")
out_file <- file.path(ref_dir, "extra_reference.json")
if (!file.exists(file.path(ref_dir, "cases.tsv")))
  stop("run this script from the repository root (tests/data/reference not found)")

cases <- read.delim(file.path(ref_dir, "cases.tsv"), stringsAsFactors = FALSE)

## Grouping columns must be factors with the labels exactly as they appear in
## the CSV (e.g. sleepstudy's Subject "308"), so that predict() with new data
## given as character matches the fitted levels.
read_data <- function(file, group) {
  d <- read.csv(file.path(ref_dir, file), stringsAsFactors = FALSE)
  d[[group]] <- factor(as.character(d[[group]]))
  d
}

## ---------------------------------------------------------------------------
## Global-optimum lmer fits
## ---------------------------------------------------------------------------

## theta = 0 is included explicitly because the boundary is itself a candidate
## optimum; the upper end (1e3) is far beyond any ICC these data support.
THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e3), length.out = 2000)))

## Differences below this are treated as the same optimum; the default fit is
## then kept so that "used" only says "restart" when it matters.
CRIT_TOL <- 1e-7

fit_log <- list()   # bookkeeping for every fit, written to "_fits"

criterion_of <- function(m) if (isREML(m)) REMLcrit(m) else deviance(m)

## Fit `form` on `dat` with lme4's default start and with a restart from the
## best grid point; return the better one (plus both, for the Hausman
## comparison against the default-start fit).  Fits are lmerTest objects so
## Satterthwaite/KR methods work on them directly; the model call keeps the
## symbol `dat` so that lme4's anova() sees the same data object for models
## fitted by this function on the same data.
fit_global <- function(label, form, dat, REML = TRUE) {
  ## Messages such as "boundary (singular) fit" are expected here and are
  ## recorded through isSingular() instead of being printed.
  m_def <- suppressMessages(eval(bquote(
    lmerTest::lmer(.(form), data = dat, REML = .(REML)))))

  devfun <- lme4::lmer(form, data = dat, REML = REML, devFunOnly = TRUE)
  vals <- vapply(THETA_GRID, function(th) devfun(th), numeric(1))
  best <- THETA_GRID[which.min(vals)]

  ## Grid points lower than both neighbours (or the boundary point if the
  ## criterion rises from it): shows how many local optima the profile has.
  n <- length(vals)
  is_min <- c(vals[1] < vals[2],
              vals[2:(n - 1)] < vals[1:(n - 2)] & vals[2:(n - 1)] < vals[3:n],
              vals[n] < vals[n - 1])
  local_minima <- lapply(which(is_min), function(i)
    list(theta = THETA_GRID[i], criterion = vals[i]))

  m_rs <- suppressMessages(eval(bquote(
    lmerTest::lmer(.(form), data = dat, REML = .(REML),
                   start = list(theta = .(best))))))

  c_def <- criterion_of(m_def)
  c_rs  <- criterion_of(m_rs)
  use_restart <- c_rs < c_def - CRIT_TOL
  m <- if (use_restart) m_rs else m_def

  fit_log[[label]] <<- list(
    formula = deparse1(form),
    REML = REML,
    criterion_type = if (REML) "REML criterion (-2 REML log-lik)" else "deviance (-2 log-lik)",
    used = if (use_restart) "restart" else "default",
    criterion_used = criterion_of(m),
    theta_used = unname(getME(m, "theta")),
    criterion_default = c_def,
    theta_default = unname(getME(m_def, "theta")),
    criterion_restart = c_rs,
    theta_restart = unname(getME(m_rs, "theta")),
    grid_best_theta = best,
    grid_best_criterion = min(vals),
    grid_local_minima = local_minima,
    singular = isSingular(m),
    default_worse_by = c_def - criterion_of(m)
  )
  list(model = m, default = m_def, restart = m_rs)
}

## ---------------------------------------------------------------------------
## Small converters to JSON-friendly lists
## ---------------------------------------------------------------------------

## Named numeric vector -> JSON object (jsonlite would otherwise drop names).
named <- function(x) as.list(x)

## Table with row names -> list of objects with an explicit "term" field and
## renamed columns (renaming = c(new = "R column name")).
rows_of <- function(tab, renaming, term_key = "term") {
  tab <- as.data.frame(tab, check.names = FALSE)
  lapply(seq_len(nrow(tab)), function(i) {
    row <- list()
    row[[term_key]] <- rownames(tab)[i]
    for (k in names(renaming)) row[[k]] <- unname(tab[i, renaming[[k]]])
    row
  })
}

ANOVA_COLS <- c(sum_sq = "Sum Sq", mean_sq = "Mean Sq", num_df = "NumDF",
                den_df = "DenDF", f_value = "F value", p_value = "Pr(>F)")
COEF_COLS  <- c(estimate = "Estimate", se = "Std. Error", df = "df",
                t_value = "t value", p_value = "Pr(>|t|)")

coef_table <- function(m, ddf = "Satterthwaite")
  rows_of(summary(m, ddf = ddf)$coefficients, COEF_COLS)

## Matrix -> list of rows (so a 1-row L stays a nested array in JSON).
mat_rows <- function(L) lapply(seq_len(nrow(L)), function(i) unname(L[i, ]))

## Keep going if one R function fails for one case; the failure is recorded.
safely <- function(expr) tryCatch(expr, error = function(e)
  list(error = conditionMessage(e)))

## ---------------------------------------------------------------------------
## Load data and fit all cases (REML and ML, global optimum)
## ---------------------------------------------------------------------------

case_data <- list()
reml_fits <- list()
ml_fits_obj <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  dat <- read_data(cs$file, cs$group)
  case_data[[cs$name]] <- dat
  form <- as.formula(cs$formula)
  reml_fits[[cs$name]]   <- fit_global(paste0(cs$name, "/reml"), form, dat, TRUE)
  ml_fits_obj[[cs$name]] <- fit_global(paste0(cs$name, "/ml"), form, dat, FALSE)
}

## ---------------------------------------------------------------------------
## 1. Type-3 ANOVA (Satterthwaite and Kenward-Roger) and explicit contrasts
## ---------------------------------------------------------------------------

anova_type3 <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  m <- reml_fits[[cs$name]]$model
  if (length(fixef(m)) < 2) next      # intercept-only: no terms to test
  sat <- anova(m, type = 3, ddf = "Satterthwaite")
  kr  <- safely(anova(m, type = 3, ddf = "Kenward-Roger"))
  ## lmerTest's type-3 hypothesis matrices, so the engine can check that it
  ## tests the same linear functions (columns in lme4's fixef order).
  hyp <- lapply(attr(sat, "hypotheses"), mat_rows)
  anova_type3[[cs$name]] <- list(
    formula = cs$formula,
    fit = paste0(cs$name, "/reml"),
    columns = names(fixef(m)),
    hypotheses = hyp,
    satterthwaite = rows_of(sat, ANOVA_COLS),
    kenward_roger = if (is.data.frame(kr)) rows_of(kr, ANOVA_COLS) else kr
  )
}

## Contrasts on sim_unbalanced; columns are lme4's order:
## (Intercept), x1, catb, catc, x2, x1:catb, x1:catc.
m_unb <- reml_fits[["sim_unbalanced"]]$model
contrast_defs <- list(
  x1_and_catb_minus_catc = rbind(c(0, 1, 0, 0, 0, 0, 0),
                                 c(0, 0, 1, -1, 0, 0, 0)),
  ## Same hypothesis as the type-3 row for x1:cat: a cross-check.
  x1_cat_interaction     = rbind(c(0, 0, 0, 0, 0, 1, 0),
                                 c(0, 0, 0, 0, 0, 0, 1)),
  ## One-row contrast: F = t^2; the t form is recorded as well.
  x1catb_minus_x1catc    = rbind(c(0, 0, 0, 0, 0, 1, -1))
)
contest_one <- function(L, ddf) {
  r <- contest(m_unb, L, joint = TRUE, ddf = ddf)
  out <- list(sum_sq = r[["Sum Sq"]], mean_sq = r[["Mean Sq"]],
              num_df = r[["NumDF"]], den_df = r[["DenDF"]],
              f_value = r[["F value"]], p_value = r[["Pr(>F)"]])
  if (nrow(L) == 1) {
    t1 <- contest(m_unb, L[1, ], joint = FALSE, ddf = ddf)
    out$t_test <- list(estimate = t1[["Estimate"]], se = t1[["Std. Error"]],
                       df = t1[["df"]], t_value = t1[["t value"]],
                       lower = t1[["lower"]], upper = t1[["upper"]],
                       p_value = t1[["Pr(>|t|)"]])
  }
  out
}
contest_res <- list(
  case = "sim_unbalanced",
  fit = "sim_unbalanced/reml",
  columns = names(fixef(m_unb)),
  contrasts = lapply(contrast_defs, function(L) list(
    L = mat_rows(L),
    satterthwaite = contest_one(L, "Satterthwaite"),
    kenward_roger = contest_one(L, "Kenward-Roger")))
)

## ---------------------------------------------------------------------------
## 2. Nested model comparisons (likelihood-ratio tests)
## ---------------------------------------------------------------------------

## lme4's anova() refits REML models by ML *starting from the REML theta*, so
## on multi-modal profiles its answer can depend on which REML fit it was
## given.  The primary result ("ml_global") compares the global-optimum ML
## fits directly; the two refit variants show what anova() on the
## default-start and on the global REML fits reports.
lrt_table <- function(m0, m1) {
  a <- suppressMessages(anova(m0, m1))
  mod <- function(j) list(npar = a$npar[j], AIC = a$AIC[j], BIC = a$BIC[j],
                          logLik = a$logLik[j], deviance = a$deviance[j])
  list(m0 = mod(1), m1 = mod(2),
       Chisq = a$Chisq[2], Df = a$Df[2], p_value = a[["Pr(>Chisq)"]][2])
}

nested_pairs <- list(
  sleepstudy     = list(case = "sleepstudy",
                        f0 = Reaction ~ 1 + (1 | Subject),
                        f1 = Reaction ~ Days + (1 | Subject)),
  sim_unbalanced = list(case = "sim_unbalanced",
                        f0 = y ~ x1 + cat + x2 + (1 | g),
                        f1 = y ~ x1 * cat + x2 + (1 | g)),
  seed           = list(case = "seed_x",
                        f0 = y ~ 1 + (1 | f),
                        f1 = y ~ x + (1 | f))
)

anova_nested <- list()
for (nm in names(nested_pairs)) {
  p <- nested_pairs[[nm]]
  dat <- case_data[[p$case]]
  r0 <- fit_global(paste0("nested/", nm, "/m0/reml"), p$f0, dat, TRUE)
  r1 <- fit_global(paste0("nested/", nm, "/m1/reml"), p$f1, dat, TRUE)
  g0 <- fit_global(paste0("nested/", nm, "/m0/ml"), p$f0, dat, FALSE)
  g1 <- fit_global(paste0("nested/", nm, "/m1/ml"), p$f1, dat, FALSE)
  ml_global <- lrt_table(g0$model, g1$model)
  from_def  <- lrt_table(r0$default, r1$default)
  from_glob <- lrt_table(r0$model, r1$model)
  anova_nested[[nm]] <- list(
    data = p$case,
    m0_formula = deparse1(p$f0),
    m1_formula = deparse1(p$f1),
    ml_global = ml_global,
    lme4_refit_from_reml_default = from_def,
    lme4_refit_from_reml_global = from_glob,
    refit_variants_agree = isTRUE(all.equal(ml_global, from_def, tolerance = 1e-6)) &&
                           isTRUE(all.equal(ml_global, from_glob, tolerance = 1e-6))
  )
}

## Dyestuff: random intercept vs no random effect (lm).  The LRT statistic is
## on the boundary of the parameter space, so besides the naive chi2(1)
## p-value the 50:50 mixture of chi2(0) and chi2(1) is given.
dye <- case_data[["dyestuff"]]
dye_ml <- ml_fits_obj[["dyestuff"]]$model
dye_lm <- lm(Yield ~ 1, data = dye)
ll_mixed <- as.numeric(logLik(dye_ml))
ll_lm    <- as.numeric(logLik(dye_lm))    # ML log-likelihood for lm
lrt_stat <- 2 * (ll_mixed - ll_lm)
anova_nested[["dyestuff_vs_lm"]] <- list(
  data = "dyestuff",
  m0_formula = "Yield ~ 1 (lm)",
  m1_formula = "Yield ~ 1 + (1 | Batch)",
  lm = list(npar = attr(logLik(dye_lm), "df"), logLik = ll_lm,
            AIC = AIC(dye_lm), BIC = BIC(dye_lm)),
  mixed_ml = list(npar = attr(logLik(dye_ml), "df"), logLik = ll_mixed,
                  AIC = AIC(dye_ml), BIC = BIC(dye_ml),
                  deviance = deviance(dye_ml)),
  lrt = list(stat = lrt_stat, df = 1,
             p_chisq1 = pchisq(lrt_stat, 1, lower.tail = FALSE),
             p_mixture_50_50 = 0.5 * pchisq(lrt_stat, 1, lower.tail = FALSE))
)

## ---------------------------------------------------------------------------
## 3-5. Within / between / pooled estimators, Hausman, Mundlak
## ---------------------------------------------------------------------------

econ_cases <- list(seed = list(case = "seed_x", group = "f"),
                   sim_contextual = list(case = "sim_contextual", group = "g"))

lm_slope <- function(fit, term) {
  s <- summary(fit)
  list(coef = unname(coef(fit)[term]),
       se = unname(s$coefficients[term, "Std. Error"]),
       t_value = unname(s$coefficients[term, "t value"]),
       p_value = unname(s$coefficients[term, "Pr(>|t|)"]),
       df_resid = fit$df.residual, sigma = s$sigma,
       n = length(fit$residuals))
}

within_fe <- list()
hausman <- list()
mundlak <- list()
for (nm in names(econ_cases)) {
  ec <- econ_cases[[nm]]
  dat <- case_data[[ec$case]]
  dat$grp <- dat[[ec$group]]
  dat$xbar <- ave(dat$x, dat$grp)        # group mean of x
  dat$x_within <- dat$x - dat$xbar

  fe  <- lm(y ~ x + grp, data = dat)     # group dummies = within estimator
  gm  <- data.frame(y_bar = tapply(dat$y, dat$grp, mean),
                    x_bar = tapply(dat$x, dat$grp, mean))
  btw <- lm(y_bar ~ x_bar, data = gm)
  ols <- lm(y ~ x, data = dat)

  within_fe[[nm]] <- list(
    data = ec$case,
    within = c(lm_slope(fe, "x"), list(formula = paste0("y ~ x + factor(", ec$group, ")"))),
    between = c(lm_slope(btw, "x_bar"),
                list(intercept = unname(coef(btw)[1]),
                     formula = "y_bar ~ x_bar (group means, one row per group)")),
    pooled = c(lm_slope(ols, "x"),
               list(intercept = unname(coef(ols)[1]), formula = "y ~ x"))
  )

  ## Hausman for the x slope; RE from REML fits of y ~ x + (1|group).
  b_fe <- unname(coef(fe)["x"])
  v_fe <- vcov(fe)["x", "x"]
  haus_from <- function(m) {
    b_re <- unname(fixef(m)["x"])
    v_re <- as.matrix(vcov(m))["x", "x"]
    stat <- (b_fe - b_re)^2 / (v_fe - v_re)
    list(b_re = b_re, v_re = v_re, v_diff = v_fe - v_re, stat = stat, df = 1,
         p_value = if (v_fe > v_re) pchisq(stat, 1, lower.tail = FALSE) else NA)
  }
  rf <- reml_fits[[ec$case]]
  ## plm needs a (group, time) index; the within-group row number serves.
  pdat <- dat[, c("y", "x", ec$group)]
  pdat$t <- ave(seq_len(nrow(pdat)), pdat[[ec$group]], FUN = seq_along)
  pdat <- pdata.frame(pdat, index = c(ec$group, "t"))
  plm_res <- safely({
    w <- plm(y ~ x, data = pdat, model = "within")
    r <- plm(y ~ x, data = pdat, model = "random")   # Swamy-Arora by default
    h <- phtest(w, r)
    ec_r <- ercomp(r)
    list(statistic = unname(h$statistic), df = unname(h$parameter),
         p_value = unname(h$p.value),
         random_method = "swamyarora",
         b_re = unname(coef(r)["x"]), v_re = vcov(r)["x", "x"],
         b_fe = unname(coef(w)["x"]), v_fe = vcov(w)["x", "x"],
         sigma2_idios = unname(ec_r$sigma2["idios"]),
         sigma2_id = unname(ec_r$sigma2["id"]),
         ## ercomp gives one theta for balanced panels and one per
         ## observation otherwise; it only varies with group size, so one
         ## value per group is enough.
         theta_by_group = named(tapply(rep_len(as.numeric(ec_r$theta), nrow(pdat)),
                                       index(pdat)[[1]], function(v) v[1])))
  })
  hausman[[nm]] <- list(
    data = ec$case, term = "x",
    b_fe = b_fe, v_fe = v_fe,
    reml_global = c(list(fit = paste0(ec$case, "/reml"),
                         used = fit_log[[paste0(ec$case, "/reml")]]$used),
                    haus_from(rf$model)),
    reml_lme4_default = haus_from(rf$default),
    plm_phtest = plm_res
  )

  ## Mundlak: adding the group mean of x makes the x slope the within slope
  ## and the xbar slope the between-minus-within (contextual) effect.
  mf <- as.formula(paste0("y ~ x + xbar + (1 | ", ec$group, ")"))
  mm <- fit_global(paste0("mundlak/", nm), mf, dat, TRUE)$model
  mundlak[[nm]] <- list(
    data = ec$case, formula = deparse1(mf),
    fit = paste0("mundlak/", nm),
    coefficients = coef_table(mm, "Satterthwaite")
  )
  if (nm == "sim_contextual") {
    ## Within/between parametrisation of the same model: x_w = x - xbar,
    ## x_b = xbar (sim_contextual.csv has no such columns, so built here).
    dat$x_w <- dat$x_within
    dat$x_b <- dat$xbar
    wf <- y ~ x_w + x_b + (1 | g)
    wm <- fit_global("mundlak/sim_contextual_within_between", wf, dat, TRUE)$model
    mundlak[["sim_contextual_within_between"]] <- list(
      data = ec$case, formula = deparse1(wf),
      fit = "mundlak/sim_contextual_within_between",
      coefficients = coef_table(wm, "Satterthwaite")
    )
  }
}

## ---------------------------------------------------------------------------
## 6. Prediction with new and unseen levels (sleepstudy, REML)
## ---------------------------------------------------------------------------

m_sleep <- reml_fits[["sleepstudy"]]$model
newdata <- data.frame(Days = c(0, 5, 9, 3),
                      Subject = c("308", "309", "999", "new"),
                      stringsAsFactors = FALSE)
predict_new <- list(
  case = "sleepstudy", fit = "sleepstudy/reml",
  newdata = list(Days = newdata$Days, Subject = newdata$Subject),
  re_form_null = unname(predict(m_sleep, newdata = newdata,
                                re.form = NULL, allow.new.levels = TRUE)),
  re_form_na = unname(predict(m_sleep, newdata = newdata, re.form = NA)),
  ranef = named(setNames(ranef(m_sleep)$Subject[["(Intercept)"]],
                         rownames(ranef(m_sleep)$Subject)))
)

## ---------------------------------------------------------------------------
## 7. Wald confidence intervals (REML); variance parameters come out NA
## ---------------------------------------------------------------------------

confint_wald <- list()
for (nm in c("sleepstudy", "sim_unbalanced")) {
  ci <- confint(reml_fits[[nm]]$model, method = "Wald", level = 0.95)
  confint_wald[[nm]] <- list(fit = paste0(nm, "/reml"), level = 0.95,
                             intervals = rows_of(ci, c(lower = "2.5 %", upper = "97.5 %"),
                                                 term_key = "parameter"))
}

## ---------------------------------------------------------------------------
## 9. Satterthwaite coefficient tables for the ML global-optimum fits
## ---------------------------------------------------------------------------

ml_fits <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  m <- ml_fits_obj[[cs$name]]$model
  ml_fits[[cs$name]] <- list(
    formula = cs$formula, fit = paste0(cs$name, "/ml"),
    criterion = deviance(m), theta = unname(getME(m, "theta")),
    coefficients = safely(coef_table(m, "Satterthwaite"))
  )
}

## ---------------------------------------------------------------------------
## Write
## ---------------------------------------------------------------------------

pkg_ver <- function(p) as.character(packageVersion(p))
out <- list(
  `_about` = list(
    R = R.version.string,
    lme4 = pkg_ver("lme4"), lmerTest = pkg_ver("lmerTest"),
    pbkrtest = pkg_ver("pbkrtest"), plm = pkg_ver("plm"),
    Matrix = pkg_ver("Matrix"), jsonlite = pkg_ver("jsonlite"),
    script = "tests/data/r/make_extra_reference.R",
    note = paste("All lmer fits are at the global optimum of the profiled",
                 "criterion over theta >= 0: lme4 default start vs restart from",
                 "the best of a 2001-point theta grid, lower criterion kept;",
                 "see _fits. Field documentation: tests/data/r/README.md")
  ),
  anova_type3 = anova_type3,
  contest = contest_res,
  anova_nested = anova_nested,
  within_fe = within_fe,
  hausman = hausman,
  mundlak = mundlak,
  predict_new = predict_new,
  confint_wald = confint_wald,
  ml_fits = ml_fits,
  `_fits` = fit_log
)

write_json(out, out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE,
           na = "null", null = "null")

cat(sprintf("wrote %s (%d lmer fits, %.1f s)\n", out_file, length(fit_log),
            proc.time()[["elapsed"]] - t_start))
for (lab in names(fit_log)) {
  f <- fit_log[[lab]]
  if (f$used == "restart")
    cat(sprintf("  %-40s default start worse by %.6g (theta %.4g -> %.4g)\n",
                lab, f$default_worse_by, f$theta_default, f$theta_used))
}
