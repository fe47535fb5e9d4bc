# expect: status=cpu_time_limit event=cpu_time_limit
# flags: --cpu-time 0.5 --timeout 5
while True:
    pass
