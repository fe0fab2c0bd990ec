#!/bin/sh
# deps.sh [demo|test]: the Debian packages that the demo (build + debug
# server) or the whole test suite needs. As root it installs what is
# missing (scripts/apt-install.sh: no service is left running); otherwise
# it prints the command. Nothing is installed when everything is present.
DEMO="gcc make pkg-config libssl-dev libidn-dev libidn2-dev ca-certificates lua5.4 liblua5.4-dev lua-socket"
TEST="$DEMO openssl lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev lua-busted lua-sec lua-copas lua-coxpcall lua-cqueues lua-luaossl lua-check luarocks postfix dovecot-core dovecot-lmtpd nginx libnginx-mod-http-lua lua-resty-core python3 python3-dkim python3-nacl curl dante-server tinyproxy"
case "${1:-test}" in
  demo) PKGS=$DEMO ;;
  *) PKGS=$TEST ;;
esac

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "lua-smtp needs these Debian packages:$missing"
  echo "install them with:  sudo apt-get install -y --no-install-recommends$missing"
  exit 1
fi
echo "installing:$missing"
exec sh "$(dirname "$0")/apt-install.sh" $missing
