# Sourced by the install-*.sh scripts: npm (or pip) packages pinned into an ignored cache directory,
# recorded in a stamp file so that a second run with the same pins returns at once.

# pinned_present STAMP WANT EXE... : the stamp says WANT and every EXE is executable
pinned_present() {
  local stamp="$1" want="$2"
  shift 2
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  local exe
  for exe in "$@"; do [ -x "$exe" ] || return 1; done
}

# npm_install_into DIR PACKAGE... : npm install the exact packages into DIR (a private
# package.json is created when missing)
npm_install_into() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  (cd "$dir" && { [ -f package.json ] || echo '{"name":"clibridge-cache","private":true}' > package.json; } \
     && npm install --no-audit --no-fund --loglevel=error --save-exact "$@")
}

# pip_venv_into DIR PYTHON PACKAGE : a venv of its own at DIR/venv (made with PYTHON when
# missing) with the exact PACKAGE pip-installed into it
pip_venv_into() {
  local dir="$1" py="$2" pkg="$3"
  mkdir -p "$dir"
  [ -x "$dir/venv/bin/python" ] || "$py" -m venv "$dir/venv"
  "$dir/venv/bin/python" -m pip install --quiet --upgrade pip
  "$dir/venv/bin/python" -m pip install --quiet "$pkg"
}

# pinned_done STAMP WANT DEST START : write the stamp and say what was installed, how fast
pinned_done() {
  echo "$2" > "$1"
  echo "installed $2 into $3 in $(( $(date +%s) - $4 )) s ($(du -sh "$3" | cut -f1))"
}
