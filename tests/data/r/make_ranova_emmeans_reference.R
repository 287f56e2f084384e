# lmerTest's ranova() and emmeans' marginal means and pairwise contrasts (issue 14), on the
# data sets bundled with reml_engine (reml_engine/datasets, exported from these R objects by
# reml_engine/datasets/make_datasets.R), one random term and several, REML and ML:
#   sleepstudy   Reaction ~ Days + (1 | Subject)
#   orthodont    distance ~ age * Sex + (1 | Subject)                  (Sex at mean age)
#   orthodont_log distance ~ log(age) + Sex + (1 | Subject)             (at log of mean age)
#   orthodont_w  distance ~ age + Sex + (1 | Subject), weights = age   (prior weights)
#   dyestuff2    Yield ~ 1 + (1 | Batch)                               (variance at 0)
#   milk         protein ~ Time + Diet + (1 | Cow)                     (Diet: 3 levels)
#   exam         normexam ~ standLRT + sex + schgend + (1 | school)    (schgend averaged over sex)
#   warpbreaks   breaks ~ wool + (1 | tension)
#   machines     score ~ Machine + (1 | Worker) + (1 | Worker:Machine)
#   oats         yield ~ nitro + Variety + (1 | Block/Variety)
#   oats_nitro   yield ~ factor(nitro) + Variety + (1 | Block/Variety)  (Python: C(nitro))
#   penicillin   diameter ~ 1 + (1 | plate) + (1 | sample)
# emmeans is asked for Satterthwaite's df (lmer.df = "satterthwaite"; its own default is
# Kenward-Roger below 3000 rows) and, for REML fits of one term, Kenward-Roger's. Pairwise
# contrasts are summarized with adjust = "tukey" (emmeans' default for pairs()), "none"
# "sidak", "bonferroni", with their (equally adjusted) confidence intervals. For a factor with
# three levels or more, two custom contrasts (the first level against the mean of the others,
# the last against the first) are summarized with adjust = "sidak".
#
# Every fit is converged tightly (lme4's default tolerances leave the ML fit of orthodont
# 2e-5 away in the standard errors from the optimum); ranova's refits keep the control.
#
# Run from the repository root (about 10 s):
#
#     Rscript tests/data/r/make_ranova_emmeans_reference.R
#
# Writes tests/data/ranova_emmeans_reference.json.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(emmeans)
  library(jsonlite)
})

data_sets <- list(
  sleepstudy = lme4::sleepstudy,
  orthodont = as.data.frame(nlme::Orthodont),
  milk = as.data.frame(nlme::Milk),
  exam = as.data.frame(mlmRev::Exam),
  warpbreaks = datasets::warpbreaks,
  machines = as.data.frame(nlme::Machines),
  oats = as.data.frame(nlme::Oats),
  penicillin = lme4::Penicillin,
  dyestuff2 = lme4::Dyestuff2
)

# label = list(data, formula (R and Python read it alike unless python_formula is given),
# emmeans specs, Kenward-Roger too?)
cases <- list(
  sleepstudy = list(data = "sleepstudy", formula = "Reaction ~ Days + (1|Subject)", specs = character(0)),
  orthodont = list(data = "orthodont", formula = "distance ~ age * Sex + (1|Subject)", specs = "Sex", kr = TRUE),
  orthodont_log = list(data = "orthodont", formula = "distance ~ log(age) + Sex + (1|Subject)",
                       python_formula = "distance ~ np.log(age) + Sex + (1|Subject)", specs = "Sex", kr = TRUE),
  orthodont_w = list(data = "orthodont", formula = "distance ~ age + Sex + (1|Subject)", weights = "age",
                     specs = "Sex"),
  dyestuff2 = list(data = "dyestuff2", formula = "Yield ~ 1 + (1|Batch)", specs = character(0)),
  milk = list(data = "milk", formula = "protein ~ Time + Diet + (1|Cow)", specs = "Diet", kr = TRUE),
  exam = list(data = "exam", formula = "normexam ~ standLRT + sex + schgend + (1|school)",
              specs = c("schgend", "sex")),
  warpbreaks = list(data = "warpbreaks", formula = "breaks ~ wool + (1|tension)", specs = "wool", kr = TRUE),
  machines = list(data = "machines", formula = "score ~ Machine + (1|Worker) + (1|Worker:Machine)",
                  specs = "Machine", kr = TRUE),
  oats = list(data = "oats", formula = "yield ~ nitro + Variety + (1|Block/Variety)", specs = "Variety"),
  oats_nitro = list(data = "oats", formula = "yield ~ factor(nitro) + Variety + (1|Block/Variety)",
                    python_formula = "yield ~ C(nitro) + Variety + (1|Block/Variety)", specs = "nitro"),
  penicillin = list(data = "penicillin", formula = "diameter ~ 1 + (1|plate) + (1|sample)",
                    specs = character(0))
)

tight <- lmerControl(optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, ftol_rel = 1e-14,
                                    maxeval = 1e5))

ranova_values <- function(m) {
  table <- as.data.frame(ranova(m))
  list(row = rownames(table), npar = table$npar, logLik = table$logLik, AIC = table$AIC,
       LRT = table$LRT, Df = table$Df, p = table[["Pr(>Chisq)"]])
}

pairs_values <- function(emm, adjust) {
  tests <- as.data.frame(summary(pairs(emm), adjust = adjust))
  intervals <- as.data.frame(confint(pairs(emm), adjust = adjust))
  list(contrast = as.character(tests$contrast), estimate = tests$estimate, se = tests$SE, df = tests$df,
       t = tests$t.ratio, p = tests$p.value, lower = intervals$lower.CL, upper = intervals$upper.CL)
}

emmeans_values <- function(m, spec, df_method) {
  emm <- emmeans(m, spec, lmer.df = df_method)
  table <- as.data.frame(summary(emm))
  out <- list(level = as.character(table[[spec]]), emmean = table$emmean, se = table$SE, df = table$df,
              lower = table$lower.CL, upper = table$upper.CL,
              pairs = list(tukey = pairs_values(emm, "tukey"), none = pairs_values(emm, "none"),
                           sidak = pairs_values(emm, "sidak"), bonferroni = pairs_values(emm, "bonferroni")))
  k <- nrow(table)
  if (k >= 3) {
    weights <- list(first_vs_rest = c(1, rep(-1 / (k - 1), k - 1)), last_vs_first = c(-1, rep(0, k - 2), 1))
    tests <- as.data.frame(summary(contrast(emm, weights), adjust = "sidak"))
    intervals <- as.data.frame(confint(contrast(emm, weights), adjust = "sidak"))
    out$custom <- list(weights = weights, adjust = "sidak", contrast = as.character(tests$contrast),
                       estimate = tests$estimate, se = tests$SE, df = tests$df, t = tests$t.ratio,
                       p = tests$p.value, lower = intervals$lower.CL, upper = intervals$upper.CL)
  }
  out
}

emm_options(lmerTest.limit = 5000, pbkrtest.limit = 5000)  # exam has 4059 rows
ranova_out <- list()
emmeans_out <- list()
for (label in names(cases)) {
  case <- cases[[label]]
  data <- data_sets[[case$data]]
  for (REML in c(TRUE, FALSE)) {
    kind <- if (REML) "reml" else "ml"
    # The weights column by name, so that ranova's update() finds it in the data again.
    m <- if (is.null(case$weights)) {
      lmer(as.formula(case$formula), data = data, REML = REML, control = tight)
    } else {
      eval(bquote(lmer(.(as.formula(case$formula)), data = data, REML = .(REML), control = tight,
                       weights = .(as.name(case$weights)))))
    }
    key <- paste(label, kind, sep = "/")
    python_formula <- if (is.null(case$python_formula)) case$formula else case$python_formula
    ranova_out[[key]] <- c(list(data = case$data, formula = python_formula, r_formula = case$formula,
                                weights = case$weights, REML = REML,
                                criterion = if (REML) REMLcrit(m) else deviance(m)),
                           ranova_values(m))
    for (spec in case$specs) {
      methods <- c(satterthwaite = "satterthwaite")
      if (REML && isTRUE(case$kr)) methods <- c(methods, `kenward-roger` = "kenward-roger")
      for (method in names(methods)) {
        emmeans_out[[paste(label, kind, spec, method, sep = "/")]] <- c(
          list(data = case$data, formula = python_formula, r_formula = case$formula, weights = case$weights,
               REML = REML, spec = spec, ddf = method),
          emmeans_values(m, spec, methods[[method]]))
      }
    }
  }
}

about <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  emmeans = as.character(packageVersion("emmeans")),
  pbkrtest = as.character(packageVersion("pbkrtest")),
  nlme = as.character(packageVersion("nlme")),
  mlmRev = as.character(packageVersion("mlmRev"))
)
out <- list(`_about` = about, ranova = ranova_out, emmeans = emmeans_out)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"),
           "tests/data/ranova_emmeans_reference.json")
