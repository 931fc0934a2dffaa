
mode=$1
shift
oomc() {
  for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do
    if [ -r "$f" ]; then sed -n 's/^oom_kill //p' "$f"; return; fi
  done
  echo 0
}
reap() {
  i=0
  while [ "$i" -lt 300 ]; do
    kill -9 -1 2>/dev/null
    alive=
    for p in /proc/[0-9]*; do
      case "${p#/proc/}" in "$$" | 1) continue ;; esac
      [ -O "$p" ] || continue
      s=
      read -r s 2>/dev/null <"$p/stat" || continue
      case "${s##*) }" in Z*) continue ;; esac
      alive=1
      break
    done
    [ -z "$alive" ] && return 0
    i=$((i + 1))
    sleep 0.01
  done
}
wipe() {
  find /work /tmp /dev/shm -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null
}
if [ "$mode" = clean ]; then
  cd /
  reap
  wipe
  echo "oom $(oomc)"
  exit 0
fi
id=$1 t=$2 mark=$3 fcap=$4 nc=$5
shift 5
files=
while [ "$nc" -gt 0 ]; do
  files="$files$1
"
  shift
  nc=$((nc - 1))
done
before=$(oomc)
wipe
if mkdir "/work/$id" 2>/dev/null && cp -a "/cands/$id/." "/work/$id/" && cd "/work/$id"; then
  timeout -s KILL "$t" env -i "$@"
  rc=$?
else
  echo "coval-sandbox: cannot copy the project into the work area (larger than the tmpfs?)" >&2
  rc=125
fi
cd /
reap
after=$(oomc)
printf '\n%s\nrc %s\noom %s %s\n' "$mark" "$rc" "${before:-0}" "${after:-0}" >&2
printf '%s' "$files" | while IFS= read -r f; do
  p="/work/$id/$f"
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    n=$(wc -c <"$p")
    [ "$n" -gt "$fcap" ] && n=$fcap
    printf 'file %s %s\n' "$n" "$f" >&2
    head -c "$n" "$p" >&2
    printf '\n' >&2
  fi
done
wipe
exit "$rc"
