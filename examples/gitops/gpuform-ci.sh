#!/usr/bin/env bash
# Every shell step of the GitOps workflow (.github/workflows/gpuform.yml). It runs gpuform and writes what
# happened into an output directory; it never talks to GitHub (the workflow posts what it wrote).
#
#   gpuform-ci.sh pr      validate and plan: OUT/comment.md (the pull request comment), OUT/gpuform.plan
#   gpuform-ci.sh apply   apply exactly the reviewed plan in PLAN_DIR (a stale one is refused): OUT/comment.md
#   gpuform-ci.sh drift   plan -refresh-only: OUT/issue.md and OUT/issue-title when reality drifted
#
# Every subcommand also writes OUT/status (one word: changes, no-changes, applied, stale, no-plan, drift,
# no-drift, error), OUT/exit-code (the exit status of the gpuform command that decided it), OUT/marker (the
# hidden HTML comment that finds the comment or issue to edit) and OUT/log. It exits 1 when something
# failed (error, stale, no-plan), else 0: changes and drift are results, reported by the files.
#
# Environment (the workflow passes the repository secrets):
#   GPUFORM_BACKEND_URL, GPUFORM_SECRETS_KEY  the team's backend and key; GPUFORM_WORKSPACE picks a workspace
#   GPUFORM_DIR       configuration directory (default .)     GPUFORM_OUT  output directory (default gpuform-out)
#   GPUFORM_PLAN_DIR  apply: the downloaded plan artifact (default gpuform-plan)
#   GPUFORM           the gpuform command (default gpuform)   GPUFORM_LOCK_TIMEOUT  (default 5m)
#   GPUFORM_INSTALL   if set, pip installs it first (e.g. gpuform==0.1.0)
#   GPUFORM_SSH_KEY, GPUFORM_KNOWN_HOSTS  if set, written to ~/.ssh/gpuform_ci and ~/.ssh/gpuform_known_hosts
#   GPUFORM_REVISION  the commit the plan was made from, shown in the comment (optional)
set -euo pipefail

DIR=${GPUFORM_DIR:-.}
OUT=${GPUFORM_OUT:-gpuform-out}
PLAN_DIR=$(realpath -m "${GPUFORM_PLAN_DIR:-gpuform-plan}")
WORKSPACE=${GPUFORM_WORKSPACE:-default}
LOCK_TIMEOUT=${GPUFORM_LOCK_TIMEOUT:-5m}
MAX_BODY=60000 # GitHub refuses comment and issue bodies over 65,536 characters
read -r -a GPUFORM_CMD <<<"${GPUFORM:-gpuform}"
export NO_COLOR=1

usage() { sed -n '2,8p' "$0" >&2; exit 64; }

gf() { "${GPUFORM_CMD[@]}" -C "$DIR" -input=false "$@"; }

# record STATUS CODE: the outcome, for the workflow and for people reading the run.
record() {
  printf '%s\n' "$1" >"$OUT/status"
  printf '%s\n' "$2" >"$OUT/exit-code"
  printf 'gpuform-ci: %s (gpuform exited %s)\n' "$1" "$2" | tee -a "$OUT/log" >&2
}

# run NAME ARGS...: gpuform ARGS, stdout to OUT/NAME.md, stderr to OUT/NAME.err (and the log); sets $code.
run() {
  local name=$1
  shift
  code=0
  gf "$@" >"$OUT/$name.md" 2>"$OUT/$name.err" || code=$?
  { echo "\$ gpuform $*"; cat "$OUT/$name.md" "$OUT/$name.err"; } >>"$OUT/log"
}

# fenced FILE: FILE's text in a code block (for error output in a comment).
# shellcheck disable=SC2016 # the backticks are Markdown
fenced() { printf '```text\n%s\n```\n' "$(cat "$1")"; }

# capped FILE: FILE cut to MAX_BODY bytes, saying so (the whole text stays in the artifact and the log).
capped() {
  local file=$1
  if (($(wc -c <"$file") > MAX_BODY)); then
    head -c "$MAX_BODY" "$file" >"$file.cut"
    printf '\n\n… cut at %s bytes: the whole text is in the run log.\n' "$MAX_BODY" >>"$file.cut"
    mv "$file.cut" "$file"
  fi
}

footer() {
  echo
  echo "<sub>workspace \`$WORKSPACE\`${GPUFORM_REVISION:+, commit \`${GPUFORM_REVISION:0:12}\`}, $(date -u '+%Y-%m-%d %H:%M UTC')</sub>"
}

# prepare: install gpuform if asked, write the SSH files, gpuform init. On failure: status error, OUT/init.err.
prepare() {
  if [ -n "${GPUFORM_INSTALL:-}" ]; then
    code=0
    python3 -m pip install --disable-pip-version-check -q "$GPUFORM_INSTALL" >"$OUT/init.err" 2>&1 || code=$?
    cat "$OUT/init.err" >>"$OUT/log"
    if ((code != 0)); then
      record error "$code"
      return 1
    fi
  fi
  if [ -n "${GPUFORM_SSH_KEY:-}" ]; then
    mkdir -p ~/.ssh && chmod 700 ~/.ssh
    (umask 077 && printf '%s\n' "$GPUFORM_SSH_KEY" >~/.ssh/gpuform_ci)
    chmod 600 ~/.ssh/gpuform_ci
  fi
  if [ -n "${GPUFORM_KNOWN_HOSTS:-}" ]; then
    mkdir -p ~/.ssh && printf '%s\n' "$GPUFORM_KNOWN_HOSTS" >~/.ssh/gpuform_known_hosts
  fi
  run init init
  if ((code != 0)); then
    record error "$code"
    return 1
  fi
}

# --- pr: validate, plan, the comment -------------------------------------------------------------------

pr() {
  local marker="<!-- gpuform-plan:$WORKSPACE -->"
  echo "$marker" >"$OUT/marker"
  if ! prepare; then
    pr_failed "gpuform init failed" "$OUT/init.err"
    return 1
  fi
  run validate validate
  if ((code != 0)); then
    record error "$code"
    pr_failed "the configuration is not valid" "$OUT/validate.md" "$OUT/validate.err"
    return 1
  fi
  run plan plan -markdown -detailed-exitcode -lock-timeout "$LOCK_TIMEOUT" -out "$OUT/gpuform.plan"
  case $code in
    0) record no-changes 0 ;;
    2) record changes 2 ;;
    *) record error "$code"; rm -f "$OUT/gpuform.plan"; pr_failed "gpuform plan failed" "$OUT/plan.err"; return 1 ;;
  esac
  {
    echo "$marker"
    cat "$OUT/plan.md"
    if [ -s "$OUT/plan.err" ]; then
      echo "<details><summary>Warnings</summary>"; echo; fenced "$OUT/plan.err"; echo "</details>"
    fi
    echo
    if [ "$(cat "$OUT/status")" = changes ]; then
      echo "Merging this pull request applies **exactly this plan**. If anything is applied first, the plan is stale:"
      echo "the apply refuses it and nothing changes until a new plan is reviewed."
    else
      echo "Merging this pull request changes nothing on the machines."
    fi
    footer
  } >"$OUT/comment.md"
  capped "$OUT/comment.md"
}

# pr_failed SUMMARY FILE...: a comment that says what failed, with the output.
pr_failed() {
  local summary=$1
  shift
  {
    cat "$OUT/marker"
    echo "### gpuform plan failed: $summary"
    echo
    for file in "$@"; do if [ -s "$file" ]; then fenced "$file"; fi; done
    echo
    echo "Nothing can be applied from this pull request until the plan succeeds; push a fix to plan again."
    footer
  } >"$OUT/comment.md"
  capped "$OUT/comment.md"
}

# --- apply: exactly the reviewed plan ------------------------------------------------------------------

apply() {
  echo "<!-- gpuform-apply:$WORKSPACE -->" >"$OUT/marker"
  prepare || { apply_comment "gpuform init failed" "$OUT/init.err"; return 1; }
  if [ ! -f "$PLAN_DIR/gpuform.plan" ]; then
    record no-plan 1
    echo "No plan file at $PLAN_DIR/gpuform.plan: nothing was applied." >"$OUT/apply.err"
    apply_comment "no reviewed plan" "$OUT/apply.err"
    return 1
  fi
  if [ "$(cat "$PLAN_DIR/status" 2>/dev/null)" = no-changes ]; then
    record no-changes 0
    apply_comment "the reviewed plan has no changes; nothing to apply"
    return 0
  fi
  run apply apply -lock-timeout "$LOCK_TIMEOUT" "$PLAN_DIR/gpuform.plan"
  if ((code == 0)); then
    record applied 0
    apply_comment "applied the reviewed plan" "$OUT/apply.err" "$OUT/apply.md"
  elif grep -qE "saved plan is stale|saved plan was made for|changed since the plan was saved" "$OUT/apply.err"; then
    record stale "$code"
    replan
    return 1
  else
    record error "$code"
    apply_comment "apply failed; the state records what was done" "$OUT/apply.md" "$OUT/apply.err"
    return 1
  fi
}

# replan: after a stale plan, what applying the configuration would do now (for the next review).
replan() {
  run replan plan -markdown -detailed-exitcode -lock-timeout "$LOCK_TIMEOUT" -out "$OUT/gpuform.plan"
  {
    cat "$OUT/marker"
    echo "### gpuform: the reviewed plan is stale — nothing was applied"
    echo
    fenced "$OUT/apply.err"
    echo
    echo "The state or the configuration changed after this plan was made (another pull request was applied"
    echo "first, or main moved on). Here is what applying the configuration would do now; open a pull request"
    echo "(an empty commit will do) to review it, and merge that to apply it."
    echo
    if ((code == 0 || code == 2)); then cat "$OUT/replan.md"; else fenced "$OUT/replan.err"; fi
    footer
  } >"$OUT/comment.md"
  capped "$OUT/comment.md"
}

# apply_comment SUMMARY [FILE...]: the comment on the merged pull request.
apply_comment() {
  local summary=$1
  shift
  {
    cat "$OUT/marker"
    echo "### gpuform apply: $summary"
    echo
    for file in "$@"; do if [ -s "$file" ]; then fenced "$file"; fi; done
    footer
  } >"$OUT/comment.md"
  capped "$OUT/comment.md"
}

# --- drift: refresh only -------------------------------------------------------------------------------

drift() {
  echo "<!-- gpuform-drift:$WORKSPACE -->" >"$OUT/marker"
  prepare || { drift_issue "gpuform: the drift check of $WORKSPACE failed" "$OUT/init.err"; return 1; }
  run drift plan -refresh-only -markdown -detailed-exitcode -lock-timeout "$LOCK_TIMEOUT"
  case $code in
    0) record no-drift 0 ;;
    2) record drift 2; drift_issue "gpuform: drift in $WORKSPACE" ;;
    *) record error "$code"; drift_issue "gpuform: the drift check of $WORKSPACE failed" "$OUT/drift.err"; return 1 ;;
  esac
}

# drift_issue TITLE [FILE...]: the issue the workflow opens (or edits, found by the marker).
drift_issue() {
  echo "$1" >"$OUT/issue-title"
  shift
  {
    cat "$OUT/marker"
    if [ "$#" -gt 0 ]; then
      echo "The scheduled drift check could not read reality, so drift is unknown until it succeeds:"
      echo
      for file in "$@"; do if [ -s "$file" ]; then fenced "$file"; fi; done
    else
      echo "The scheduled drift check found objects changed outside gpuform since the last apply:"
      echo
      cat "$OUT/drift.md"
      echo
      echo "To put back what the configuration says, open a pull request (an empty commit will do): its plan"
      echo "shows the repair, and merging applies it. To keep what changed, edit the configuration to match."
      echo "This issue is updated by each check and closed by the first one that finds no drift."
    fi
    footer
  } >"$OUT/issue.md"
  capped "$OUT/issue.md"
}

main() {
  [ "$#" -eq 1 ] || usage
  OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
  rm -f "$OUT"/{status,exit-code,marker,comment.md,issue.md,issue-title,gpuform.plan,*.err}
  : >"$OUT/log"
  case $1 in
    pr | apply | drift) "$1" ;;
    *) usage ;;
  esac
}

main "$@"
