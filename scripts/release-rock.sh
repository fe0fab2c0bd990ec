#!/usr/bin/env bash
# release-rock.sh [OUTDIR]: packs the release source rock, as `luarocks
# pack` would from the published tarball, without a network: the tracked
# files of this checkout as lua-smtp-VERSION/ in the archive the versioned
# rockspec's source.url names, zipped with that rockspec. Prints the path
# of the .src.rock (default OUTDIR: build/).
set -eu
cd "$(dirname "$0")/.."
out=${1:-build}
spec=$(ls rockspec/lua-smtp-[0-9]*.rockspec | sort -V | tail -1)
version=$(sed -n 's/^version = "\(.*\)-[0-9]*"$/\1/p' "$spec")
rockver=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$spec")
archive=$(sed -n 's/^ *url = "\(.*\)",$/\1/p' "$spec" | sed 's|.*/||')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lua-smtp-$version" "$out"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$work/lua-smtp-$version"
tar -C "$work" -czf "$work/$archive" "lua-smtp-$version"
cp "$spec" "$work/"
rock="$out/lua-smtp-$rockver.src.rock"
python3 - "$work" "$archive" "$(basename "$spec")" "$rock" <<'PY'
import sys, zipfile, os
work, archive, spec, rock = sys.argv[1:]
with zipfile.ZipFile(rock, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(os.path.join(work, spec), spec)
    z.write(os.path.join(work, archive), archive)
PY
echo "$rock"
