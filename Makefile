# imgtools: libimg, imgtool, imgvm.  `make` builds; `make check` tests;
# `make demo` runs the seed lab; `make deps` installs Debian packages.
.DEFAULT_GOAL := all
SHELL := /bin/bash

CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
VERSION := 0.1.0

ifeq ($(SANITIZE),1)
B := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZE),thread)
B := build/tsan
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
else
B := build
SANFLAGS :=
endif

PKGS_CFLAGS := $(shell pkg-config --cflags fuse3 libnbd libzstd libcurl libvncserver slirp json-c libxml-2.0 2>/dev/null)
CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror
override CFLAGS += -std=gnu11 $(WARN) -fPIC -pthread -D_GNU_SOURCE \
	-D_FILE_OFFSET_BITS=64 -DIMG_VERSION='"$(VERSION)"' -Ilibimg -I. \
	$(PKGS_CFLAGS) $(SANFLAGS) -MMD -MP
override LDFLAGS += -pthread $(SANFLAGS)
# What libimg itself links with (formats); what imgvm adds (display,
# network, VM definitions, OVA).  The storage backends' libraries (librbd,
# libcurl, libnbd) are loaded when a name needs them (libimg/dynlib.h).
LIBIMG_LIBS := -lz -lcrypto
LIBIMG_LIBS += -lzstd
ifeq ($(SANITIZE),1)
# Except under ASan: LeakSanitizer's tracer (GCC 12) died of a SIGSEGV at
# exit once libnbd and GnuTLS had come in by dlopen (backends.sh's nbds
# convert, every run); linked in, they are loaded at start, and dlopen
# finds them there.
LIBIMG_LIBS += -lnbd -lcurl -lrbd -lrados
endif
VMM_LIBS := -lvncserver -lslirp -ljson-c -lxml2 -larchive
# SDL2 (--display sdl) when its development files are installed
SDL_CFLAGS := $(shell pkg-config --cflags sdl2 2>/dev/null)
SDL_LIBS := $(shell pkg-config --libs sdl2 2>/dev/null)
ifneq ($(SDL_LIBS),)
VMM_LIBS += $(SDL_LIBS)
$(B)/obj/vmm/display/sdl.o: EXTRA_CFLAGS += -DIMGVM_SDL $(SDL_CFLAGS)
endif
# the tests' independent readers: a VNC client, a PNG decoder, an NBD client
TEST_LIBS := -lvncclient -lpng -lnbd
LIBS := $(LIBIMG_LIBS) -lssl -lfuse3

LIB_SRCS := $(sort $(wildcard libimg/*.c formats/*/*.c))
NBD_SRCS := $(sort $(wildcard nbd/*.c))
FUSE_SRCS := $(sort $(wildcard fuse/*.c))
TOOL_SRCS := $(sort $(wildcard tools/*.c))
VMM_SRCS := $(sort $(wildcard vmm/*.c vmm/devices/*.c vmm/net/*.c vmm/display/*.c))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
HELPER_SRCS := $(sort $(wildcard tests/helpers/*.c))

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))
LIB_OBJS := $(call obj,$(LIB_SRCS))
NBD_OBJS := $(call obj,$(NBD_SRCS))
FUSE_OBJS := $(call obj,$(FUSE_SRCS))
TOOL_OBJS := $(call obj,$(TOOL_SRCS))
VMM_OBJS := $(call obj,$(VMM_SRCS))
# everything but the two mains, for unit tests
TOOL_MAIN := $(B)/obj/tools/imgtool.o
VMM_MAIN := $(B)/obj/vmm/main.o
LINKABLE := $(NBD_OBJS) $(FUSE_OBJS) $(filter-out $(TOOL_MAIN),$(TOOL_OBJS)) \
	$(filter-out $(VMM_MAIN),$(VMM_OBJS))
UNIT_BINS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRCS))
HELPER_BINS := $(patsubst tests/helpers/%.c,$(B)/tests/helpers/%,$(HELPER_SRCS))

LIBA := $(B)/lib/libimg.a
LIBSO := $(B)/lib/libimg.so
WHOLE_LIBA := -Wl,--whole-archive $(LIBA) -Wl,--no-whole-archive

BINS := $(B)/bin/imgtool $(if $(VMM_SRCS),$(B)/bin/imgvm)

.PHONY: all deps check check-install unit e2e vmm-e2e demo bench crashtest fuzz valgrind install format format-check clean
all: $(LIBA) $(LIBSO) $(B)/lib/libimg.pc $(BINS)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -c -o $@ $<

$(LIBA): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBSO): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libimg.so.0 -Wl,--no-undefined $(LDFLAGS) -o $@ $^ $(LIBIMG_LIBS)

$(B)/lib/libimg.pc: Makefile
	@mkdir -p $(dir $@)
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: libimg\nDescription: block-image library (raw, VDI, VHD, VHDX, VMDK, qcow2)\nVersion: %s\nLibs: -L$${libdir} -limg\nLibs.private: $(LIBIMG_LIBS) -pthread\nCflags: -I$${includedir}\n' '$(PREFIX)' '$(VERSION)' >$@

$(B)/bin/imgtool: $(TOOL_OBJS) $(NBD_OBJS) $(FUSE_OBJS) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJS) $(NBD_OBJS) $(FUSE_OBJS) $(WHOLE_LIBA) $(LIBS)

$(B)/bin/imgvm: $(VMM_OBJS) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(VMM_OBJS) $(WHOLE_LIBA) $(LIBS) $(VMM_LIBS)

$(B)/tests/%: tests/unit/%.c $(LINKABLE) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LINKABLE) $(WHOLE_LIBA) $(LIBS) $(VMM_LIBS) $(TEST_LIBS) -lcriterion

$(B)/tests/helpers/%: tests/helpers/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(WHOLE_LIBA) $(LIBS) $(TEST_LIBS)

deps:
	@scripts/deps.sh

# The whole suite: unit tests (Criterion), then end-to-end scripts.  The
# scripts that boot VMs (their guests run in the nested test host here)
# start first and run beside the unit tests (built then, not before: the
# nested host is the longest part) and the other scripts, which run at a
# lower priority (scripts/run-e2e.sh); every part runs even when another
# fails, so one run shows every failure.
# Build in parallel even when make was started without -j.
NPROC := $(shell nproc 2>/dev/null || echo 2)
PARALLEL = $(if $(findstring j,$(filter-out --%,$(MAKEFLAGS))),,-j$(NPROC))
# SANITIZE=thread: the parallel-request test and the NBD server under
# ThreadSanitizer (Criterion's forking runner does not start under it);
# they need imgtool and the helpers only (GCC refuses the virtqueue's
# memory fences under -fsanitize=thread).
ifeq ($(SANITIZE),thread)
check: deps
	@$(MAKE) --no-print-directory $(PARALLEL) $(B)/bin/imgtool $(HELPER_BINS)
	@B=$(B) E2E_JOBS=1 scripts/run-e2e.sh tests/e2e/parallel.sh tests/e2e/serve.sh
else
check: deps
	@$(MAKE) --no-print-directory $(PARALLEL) all $(HELPER_BINS)
	@rc=0; \
	$(MAKE) --no-print-directory format-check || { rc=1; echo "check: format-check FAILED (run make format)"; }; \
	E2E_PRELUDE="$(MAKE) --no-print-directory $(PARALLEL) unit" $(MAKE) --no-print-directory e2e || rc=1; \
	if [ $$rc -eq 0 ]; then echo "check: all passed"; else echo "check: FAILED"; fi; \
	exit $$rc
endif

unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(UNIT_BINS)

e2e: all $(HELPER_BINS)
	@B=$(B) scripts/run-e2e.sh

demo: deps
	@$(MAKE) --no-print-directory $(PARALLEL) all
	@B=$(B) scripts/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/libimg.so.0
	ln -sf libimg.so.0 $(DESTDIR)$(PREFIX)/lib/libimg.so
	install -m 644 libimg/img.h $(DESTDIR)$(PREFIX)/include/
	sed 's|^prefix=.*|prefix=$(PREFIX)|' $(B)/lib/libimg.pc >$(DESTDIR)$(PREFIX)/lib/pkgconfig/libimg.pc
	$(if $(wildcard man/*.1),install -m 644 $(wildcard man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1/)
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 644 completion/imgtool.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/imgtool

# The contract headers keep their hand alignment (tables of fields and
# comments that clang-format would reflow).
FORMAT_EXEMPT := libimg/img.h libimg/driver.h vmm/vmm.h
FORMAT_DIRS := libimg formats/* tools nbd fuse vmm vmm/devices vmm/net vmm/display tests/unit tests/helpers bench
FORMAT_SRCS = $(filter-out $(FORMAT_EXEMPT),$(wildcard $(addsuffix /*.c,$(FORMAT_DIRS)) $(addsuffix /*.h,$(FORMAT_DIRS))))
format:
	clang-format -i $(FORMAT_SRCS)
format-check:
	@clang-format --dry-run --Werror $(FORMAT_SRCS)

clean:
	rm -rf build

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)

# ---- reliability ----
# make crashtest: 1000 kill points per format and 200 corrupted images per
# format (make check runs a sample of each).
crashtest: all $(HELPER_BINS)
	@B=$(B) CRASH_POINTS=$${CRASH_POINTS:-1000} bash tests/e2e/crash.sh
	@B=$(B) CORRUPT_ROUNDS=$${CORRUPT_ROUNDS:-200} bash tests/e2e/corrupt.sh

# make fuzz FUZZ_SECONDS=N: every libFuzzer harness in tests/fuzz for N s
# (FUZZ=fuzz_nbd: that one only).  FUZZ_SECONDS=0 replays the seeds and the
# corpus once (the regression run: every input that once failed is a seed).
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 30
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/$(or $(FUZZ),fuzz_*).c))
FUZZ_CFLAGS := -g -O1 -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread \
	-DIMG_VERSION='"$(VERSION)"' -Ilibimg -I. $(PKGS_CFLAGS) \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
fuzz:
	@mkdir -p build/fuzz
	@for h in $(FUZZ_SRCS); do \
		n=$$(basename $$h .c); \
		extra=$$(sed -n 's/^ \* fuzz-sources: //p' $$h); \
		clang $(FUZZ_CFLAGS) -o build/fuzz/$$n $$h $(LIB_SRCS) $$extra $(LIBIMG_LIBS) -lssl $(VMM_LIBS) || exit 1; \
		mkdir -p build/fuzz/corpus-$$n; \
		cp -n tests/fuzz/seeds/$$n/* build/fuzz/corpus-$$n/ 2>/dev/null; \
		[ $$n != fuzz_open ] || for f in tests/fixtures/*/*; do case $$f in *.md) ;; *) [ $$(stat -c %s $$f) -lt 1048576 ] && cp -n $$f build/fuzz/corpus-$$n/ ;; esac; done; \
		echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
		build/fuzz/$$n $(if $(filter 0,$(FUZZ_SECONDS)),-runs=0,-max_total_time=$(FUZZ_SECONDS)) \
			-max_len=1048576 -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=2048 \
			-artifact_prefix=build/fuzz/$$n- build/fuzz/corpus-$$n 2>&1 | grep -E '^(#[0-9]+.*(DONE|INITED)|==[0-9]+==ERROR|SUMMARY|artifact)' ; \
		ls build/fuzz/$$n-crash-* build/fuzz/$$n-leak-* build/fuzz/$$n-timeout-* 2>/dev/null && exit 1; \
	done; true

# ---- benchmarks: never part of make check ----
bench: all
	@B=$(B) bash bench/run.sh

# make check-install: Debian 12 installed from a local mirror (built with
# apt, Debian's packages only) onto a VDI, a VHD and a VMDK under imgvm, and
# booted from each (slow: tens of minutes each in the nested test host; not
# part of make check).  FMTS="vdi" for one format.
check-install: deps all
	@B=$(B) bash tests/install/debian.sh

# make valgrind: imgtool's end-to-end paths under valgrind memcheck (slow;
# not part of make check).
valgrind: all
	@B=$(B) bash tests/valgrind.sh
