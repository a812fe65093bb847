#!/bin/sh
# install-shim SRC DEST: copy every file under SRC into DEST on the node (the plugin's init container).
# Each file is written under a temporary name and renamed into place, so a process that has the previous
# libvcuda.so mapped keeps its copy (overwriting a mapped library in place crashes it).
set -eu
src="$1"
dest="$2"
cd "$src"
find . -type f | while read -r f; do
  dir="$dest/$(dirname "$f")"
  mkdir -p "$dir"
  tmp="$dir/.$(basename "$f").new.$$"
  cp -p "$f" "$tmp"
  mv -f "$tmp" "$dest/$f"
  echo "installed $dest/${f#./}"
done
