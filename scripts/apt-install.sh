#!/bin/sh
# apt-install.sh PKG...: installs Debian packages as root without leaving
# a service running. Postfix, Dovecot, nginx, Dante and tinyproxy start as system services
# when installed (nginx on port 80); the tests start private instances of
# their own instead. A policy-rc.d that answers 101 ("action forbidden")
# stops invoke-rc.d from starting anything during the install; it is
# removed again afterwards unless it was there before.
set -u
[ "$#" -gt 0 ] || exit 0
POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# written by lua-smtp scripts/apt-install.sh during an install\nexit 101\n' > "$POLICY"
  chmod 755 "$POLICY"
  ours=1
fi
# Postfix is only wanted for its test servers: no mail system setup.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null
export DEBIAN_FRONTEND=noninteractive
rc=0
log=/tmp/lua-smtp-apt.log
apt-get update -q > "$log" 2>&1
apt-get install -y -q --no-install-recommends "$@" >> "$log" 2>&1 || rc=$?
[ "$rc" = 0 ] || tail -30 "$log"
[ "$ours" = 1 ] && rm -f "$POLICY"
# Belt and braces: where something started anyway (a system whose init
# ignores policy-rc.d), stop it.
for svc in nginx postfix dovecot danted tinyproxy; do
  if command -v service >/dev/null 2>&1 && service "$svc" status >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
exit $rc
