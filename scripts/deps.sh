#!/bin/sh
# Installs the Debian packages that building, the demo and the tests need.
# As root it installs what is missing; otherwise it prints the command.
PKGS="gcc make pkg-config libssl-dev openssl ca-certificates lua5.4 liblua5.4-dev lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev lua-busted lua-socket lua-sec lua-check luarocks postfix dovecot-core dovecot-lmtpd nginx libnginx-mod-http-lua lua-resty-core python3 curl"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "lua-smtp needs these Debian packages:$missing"
  echo "install them with:  sudo apt-get install -y$missing"
  exit 1
fi
echo "installing:$missing"
# Postfix is only wanted for its smtp-sink test server: no mail system setup.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null
