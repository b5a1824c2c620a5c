# Sourced by scripts/bootstrap.sh: makes apt know a suite of the machine's own
# Debian archive (bookworm-backports) without naming any archive's host. The URI,
# components and keyring are those of the machine's own source for its release
# (deb822 /etc/apt/sources.list.d/*.sources, or one-line sources.list entries).
#   ensure_suite SUITE PACKAGE   add SUITE when no source lists it yet, then refresh
#                                apt's lists until `apt-cache madison PACKAGE` knows it

# Prints "URI|COMPONENTS|SIGNED-BY" of the first source that carries CODENAME.
apt_source_of() {
  local codename=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: stanzas separated by blank lines; pick a "Types: deb" stanza whose
    # Suites include CODENAME itself.
    awk -v want="$codename" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uri != "" && !done) {
          print uri "|" comps "|" key; done = 1
        }
        types = suites = uri = comps = key = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:" { $1 = ""; types = substr($0, 2) }
      tolower($1) == "suites:" { $1 = ""; suites = substr($0, 2) }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "components:" { $1 = ""; comps = substr($0, 2) }
      tolower($1) == "signed-by:" { key = $2 }
      END { flush() }' "$f" | head -n1 | grep . && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # one-line: deb [options] URI SUITE COMPONENT...
    awk -v want="$codename" '
      $1 != "deb" { next }
      { i = 2; key = ""
        if ($i ~ /^\[/) { for (; ; i++) { t = $i; gsub(/[][]/, "", t); if (t ~ /^signed-by=/) key = substr(t, 11); if ($i ~ /\]$/) break }; i++ } }
      $(i + 1) == want { uri = $i; comps = ""; for (j = i + 2; j <= NF; j++) comps = comps (comps ? " " : "") $j
                         print uri "|" comps "|" key; exit }' "$f" | grep . && return 0
  done
  return 1
}

suite_listed() { # suite_listed SUITE: some enabled source already names it
  grep -rqsE "^[^#]*([[:space:]]|^Suites:.*)$1([[:space:]]|$)" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources
}

ensure_suite() {
  local suite=$1 pkg=$2 codename found uri comps key file
  if ! suite_listed "$suite"; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    found=$(apt_source_of "$codename") || {
      echo "bootstrap: no apt source for $codename to derive $suite from (see /etc/apt/sources.list.d)" >&2
      exit 1
    }
    IFS='|' read -r uri comps key <<<"$found"
    file=/etc/apt/sources.list.d/nbd-$suite.sources
    echo "bootstrap: adding $suite (from $uri, the machine's own $codename source) as $file" >&2
    {
      echo "Types: deb"
      echo "URIs: $uri"
      echo "Suites: $suite"
      echo "Components: ${comps:-main}"
      [ -z "$key" ] || echo "Signed-By: $key"
    } | $SUDO tee "$file" >/dev/null
  fi
  # (grep reads all of its input: with pipefail, grep -q's early exit would fail the pipe)
  if ! apt-cache madison "$pkg" 2>/dev/null | grep "$suite" >/dev/null; then
    echo "bootstrap: apt-get update (to learn $suite)" >&2
    $SUDO apt-get update -q >/dev/null
  fi
  apt-cache madison "$pkg" 2>/dev/null | grep "$suite" >/dev/null ||
    { echo "bootstrap: apt does not know $suite after apt-get update" >&2; exit 1; }
}
