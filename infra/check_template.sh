#!/usr/bin/env bash
# Lint and build the SAM template without an AWS account or a Docker engine.
#
#   infra/check_template.sh            cfn-lint, sam validate --lint, sam build of the zip functions
#
# SAM CLI and cfn-lint live in their own tools environment (.tools/sam, ignored by git through
# .tools/.gitignore), never in the project's .venv: aws-sam-cli pins versions of its own.
# The image functions (RouterFunction, StreamFunction, JudgeFunction) need Docker to build; CI builds only the zip
# function here and the images where a Docker engine runs (`sam build` with no argument).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
VENV="$TOOLS/sam"
BUILD_DIR="$TOOLS/sam-build"
PYTHON="${PYTHON:-python3}"
ZIP_FUNCTIONS=(ApiKeyAuthorizerFunction)
export SAM_CLI_TELEMETRY=0 PIP_DISABLE_PIP_VERSION_CHECK=1

cd "$ROOT"
started=$(date +%s)
mkdir -p "$TOOLS"
[ -f "$TOOLS/.gitignore" ] || printf '*\n' > "$TOOLS/.gitignore"

if [ ! -x "$VENV/bin/sam" ] || [ ! -x "$VENV/bin/cfn-lint" ]; then
    echo "== tools environment: $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
    "$VENV/bin/pip" install -q aws-sam-cli cfn-lint
fi
echo "== $("$VENV/bin/sam" --version), cfn-lint $("$VENV/bin/cfn-lint" --version | awk '{print $2}')"

echo "== cfn-lint template.yaml"
"$VENV/bin/cfn-lint" template.yaml

echo "== sam validate --lint"
# No account: a region is all the validation needs (it makes no call).
AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$VENV/bin/sam" validate --lint --template-file template.yaml

echo "== sam build ${ZIP_FUNCTIONS[*]} (python3.12)"
# sam looks for a `python3.12` on PATH; pyenv provides one when asked for it.
if command -v pyenv >/dev/null 2>&1; then
    export PYENV_VERSION="${PYENV_VERSION:-3.12.1:3.11.7}"
    export PATH="$(pyenv root)/shims:$PATH"
fi
command -v python3.12 >/dev/null || { echo "sam build needs python3.12 on PATH" >&2; exit 1; }
rm -rf "$BUILD_DIR"
for fn in "${ZIP_FUNCTIONS[@]}"; do
    AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$VENV/bin/sam" build "$fn" \
        --template-file template.yaml --build-dir "$BUILD_DIR" --cache-dir "$TOOLS/sam-cache"
    du -sh "$BUILD_DIR/$fn"
done

echo "== all template checks passed in $(( $(date +%s) - started ))s"
