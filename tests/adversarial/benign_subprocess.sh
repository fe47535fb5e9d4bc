# expect: status=completed exit=3 stdout=hello noevents
echo hello | cat
ls /usr/bin >/dev/null
exit 3
