# clearbox - GNU Makefile. Out-of-tree build into build/ (BUILD=dir to change).
#
#   make            build/clearbox
#   make test       unit + integration tests; closing line "N passed, N failed"
#   make SAN=1 test the same under ASan + UBSan (objects go to build-san/)
#   make bench      every benchmark (bench-telemetry, bench-sandbox, bench-service)
#   make deps       install the Debian packages the build and the tests need
#   make lint       banned functions and formatting of changed files
#
# Sources are found by folder, so a new .c file needs no edit here: src/*/ go
# into build/libclearbox.a, src/cli/ links against it, every tests/unit/test_*.c
# becomes one test binary, every bench/bench_*.c one benchmark binary.

VERSION := 0.1.0
CC      ?= cc
ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD   ?= build
OPT     := -O2 -g
endif

PG_INC  := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
CPPFLAGS += -D_GNU_SOURCE -DCLEARBOX_VERSION='"$(VERSION)"' -Isrc -I$(PG_INC)
CFLAGS  ?= $(OPT)
CFLAGS  += -std=gnu17 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -Wformat=2 -Wno-format-nonliteral -fno-strict-aliasing -pthread -MMD -MP
LDFLAGS += -pthread -Wl,--as-needed -Wl,-z,relro,-z,now $(if $(filter 1,$(SAN)),-fsanitize=address$(comma)undefined)
LDLIBS  += -lseccomp -lmicrohttpd -Wl,-Bstatic -ljansson -Wl,-Bdynamic -lsqlite3 -lpq -lm -ldl
comma   := ,

LIB_SRC  := $(sort $(wildcard src/util/*.c src/telemetry/*.c src/sandbox/*.c src/service/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
TEST_SUP := $(sort $(filter-out $(TEST_SRC),$(wildcard tests/unit/*.c)))
BENCH_SRC:= $(sort $(wildcard bench/bench_*.c))
BENCH_SUP:= $(sort $(filter-out $(BENCH_SRC),$(wildcard bench/*.c)))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SUP_OBJ := $(TEST_SUP:%.c=$(BUILD)/%.o)
BENCH_SUP_OBJ := $(BENCH_SUP:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_BIN:= $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test unit-test integration-test bench bench-telemetry bench-sandbox \
        bench-service deps lint clean fuzz fuzz-run
all: $(BUILD)/clearbox

# Keep intermediate objects (the test harness) between runs.
.SECONDARY:

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libclearbox.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/clearbox: $(CLI_OBJ) $(BUILD)/libclearbox.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libclearbox.a $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(TEST_SUP_OBJ) $(BUILD)/libclearbox.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_SUP_OBJ) \
	    $(BUILD)/libclearbox.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BENCH_SUP_OBJ) $(BUILD)/libclearbox.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Ibench $(CFLAGS) $(LDFLAGS) -o $@ $< $(BENCH_SUP_OBJ) \
	    $(BUILD)/libclearbox.a $(LDLIBS)

# The test binaries run one after another (some tests time themselves against
# real servers); tests/run-all sums their closing lines into one.
test: $(BUILD)/clearbox $(TEST_BIN)
	@CLEARBOX=$(abspath $(BUILD)/clearbox) tests/run-all $(BUILD)/tests

bench: bench-telemetry bench-sandbox bench-service
bench-telemetry: $(BUILD)/bench/bench_telemetry $(BUILD)/clearbox
	@bench/run telemetry $(BUILD)
bench-sandbox: $(BUILD)/clearbox
	@bench/run sandbox $(BUILD)
bench-service: $(BUILD)/clearbox
	@bench/run service $(BUILD)

# libFuzzer target for the API's request parsing and validation (clang).
# make fuzz builds it; FUZZ_SECONDS bounds `make fuzz-run` (CI runs 60 s).
FUZZ_SECONDS ?= 60
FUZZ_VALIDATE_SRC := fuzz/fuzz_validate.c src/service/validate.c src/service/config.c \
    $(wildcard src/service/store*.c src/service/*_dl.c) src/service/migrations.c \
    $(wildcard src/util/*.c)
fuzz: $(BUILD)/fuzz/fuzz_validate
$(BUILD)/fuzz/fuzz_validate: $(FUZZ_VALIDATE_SRC)
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu17 $(CPPFLAGS) \
	    $(FUZZ_VALIDATE_SRC) -ljansson -lsqlite3 -lcrypto -ldl -lm -pthread -o $@
fuzz-run: $(BUILD)/fuzz/fuzz_validate
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	    if $(BUILD)/fuzz/fuzz_validate -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix="$$d/" "$$d" fuzz/corpus_validate >"$$d/log" 2>&1; then \
	        tail -n 6 "$$d/log"; \
	    else tail -n 60 "$$d/log"; echo "fuzz: the fuzzer found a crash (above)"; exit 1; fi

deps:
	@tools/deps

lint:
	@tools/lint

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_SUP_OBJ:.o=.d) $(BENCH_SUP_OBJ:.o=.d) \
    $(TEST_BIN:=.d) $(BENCH_BIN:=.d)
