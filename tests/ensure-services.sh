#!/usr/bin/env bash
# The programs the tests start on 127.0.0.1 or drive: OpenSSH's sshd, PostgreSQL, tmux, node (a webhook
# receiver written to the seed's spec) and Chromium (renders the client report headless). Installs the missing ones from Debian's packages when it can (root and
# apt-get); otherwise stops and names the exact command to run. `make test` and CI call this first.
set -euo pipefail
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v tmux >/dev/null || need+=(tmux)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v node >/dev/null || need+=(nodejs)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing what the tests need: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "the tests need: ${need[*]}. Install them, then run make test again:" >&2
echo "  sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
exit 1
