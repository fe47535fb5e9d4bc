# expect: status=pids_limit event=pids_limit
# A classic fork bomb: the pids cgroup refuses forks, clearbox ends it.
b() { b | b & }; b
sleep 5
