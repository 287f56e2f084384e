# Reference values for update() and drop1() beyond names_reference.json (issue 14):
# R's update.formula on lmer formulas (the formula text lme4's update() fits), and
# drop1(test = "Chisq") on data where a dropped term's column has missing values
# (fitted, as reml_engine does, on the full model's rows). Run from the repository root:
#
#     Rscript tests/data/r/make_update_reference.R
#
# Writes tests/data/reference/update_reference.json.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })

cases <- list(
  c("Reaction ~ Days + (1|Subject)", ". ~ . - Days"),
  c("distance ~ age * Sex + (1|Subject)", ". ~ . - age:Sex"),
  c("distance ~ age * Sex + (1|Subject)", ". ~ . - age"),
  c("y ~ x + (1|g)", "log(.) ~ . + z"),
  c("y ~ 0 + x + (1|g)", ". ~ . + z"),
  c("y ~ x + z + (1|g)", ". ~ . - 1"),
  c("y ~ x + (1|g)", ". ~ . - (1|g) + (1|h)"),
  c("y ~ x + I(x^2) + (1|g)", ". ~ . - I(x^2)"),
  c("y ~ a * b * c + (1|g)", ". ~ . - a:b:c"),
  c("y ~ (1|g)", ". ~ . + x"),
  c("y ~ x + (1|g)", "z ~ .")
)
formulas <- lapply(cases, function(k) {
  new <- update(as.formula(k[1]), as.formula(k[2]))
  list(old = k[1], new = k[2], result = paste(deparse(new, width.cutoff = 500L), collapse = ""),
       term_labels = attr(terms(new), "term.labels"), intercept = attr(terms(new), "intercept"))
})

# drop1 where the dropped term's column has missing values: lme4 refuses ("number of rows
# in use has changed"); on the full model's rows (na.omit of the columns used) it gives:
Orthodont <- as.data.frame(nlme::Orthodont)
Orthodont$Subject <- factor(as.character(Orthodont$Subject))
holes <- Orthodont
holes$age[c(5, 40)] <- NA
holes$distance[77] <- NA
complete <- holes[complete.cases(holes[, c("distance", "age", "Sex", "Subject")]), ]
m <- lmer(distance ~ age + Sex + (1 | Subject), complete)
d <- lme4:::drop1.merMod(m, test = "Chisq")
drop1_na <- list(na_rows_1based = list(age = c(5, 40), distance = 77), nobs = nobs(m),
                 term = rownames(d), npar = d$npar, AIC = d$AIC, LRT = d$LRT, p = d[["Pr(Chi)"]])

ref <- list(update_formula = formulas, drop1_na = drop1_na,
            `_about` = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                            script = "tests/data/r/make_update_reference.R"))
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null", null = "null"),
           "tests/data/reference/update_reference.json")
