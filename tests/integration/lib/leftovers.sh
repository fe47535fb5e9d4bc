# tests/integration/lib/leftovers.sh - sourced (not run) by the crash tests:
# what a killed clearbox left behind, and whether gc removes it. Uses the
# caller's $CB (the clearbox binary) and its ok/bad reporting functions.

# left_behind IDS...: state directories, mounts and cgroups named after the
# given evaluations (run ids are "<eval_id>-<attempt>") or prefixes (the
# killed process's cgroup pool: "pool-<pid>-"); prints them.
left_behind() {
    local id
    for id in "$@"; do
        ls -d /run/clearbox/"$id"* /sys/fs/cgroup/*/clearbox/"$id"* /sys/fs/cgroup/clearbox/"$id"* 2>/dev/null
        grep -F "$id" /proc/mounts | cut -d' ' -f2
    done
}
# no_leftovers KILL_TIME_S IDS...: what the killed process left is removed by
# the gc of the live nodes or, at the latest, by `clearbox gc` once it is
# older than the gc's 10 s safety margin.
no_leftovers() {
    local t=$1 left
    shift
    [ $# = 0 ] && return 0
    local gcout="" why="" p
    left=$(left_behind "$@")
    if [ -n "$left" ]; then
        while [ $(($(date +%s) - t)) -le 11 ]; do sleep 0.5; done
        gcout=$("$CB" gc 2>&1)
        left=$(left_behind "$@")
    fi
    if [ -n "$left" ]; then
        # what gc saw: each leftover's age and tasks, and gc's own words
        for p in $left; do
            why="$why $p: age $(($(date +%s) - $(stat -c %Y "$p" 2>/dev/null || echo 0))) s,"
            [ -f "$p/cgroup.procs" ] && why="$why tasks [$(tr '\n' ' ' <"$p/cgroup.procs")],"
        done
        why="$why gc said: $(echo "$gcout" | tr '\n' ' ' | head -c 600)"
    fi
    [ -z "$left" ] && ok "nothing of the killed runs is left (state dirs, mounts, cgroups)" ||
        bad "left behind by the killed runs: $(echo $left | head -c 300) ($why)"
}
