# expect: status=completed exit=0 stdout=4950 noevents
print(sum(range(100)))
