/* SPDX-License-Identifier: MIT */
/* Unit tests for the storage backends under struct img_file: names choose
 * the backend, the local file's calls, and the NBD backend against a real
 * nbdkit (memory plugin, multi-conn) and a server that goes silent.  The
 * RBD and HTTP backends' checks that need no cluster or server are here;
 * tests/e2e/ceph.sh and tests/e2e/backends.sh do the rest. */
#include "backend.h"
#include "dynlib.h"
#include "internal.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64];
static char errbuf[IMG_ERRMSG_MAX];
static char sock[128], uri[192];
static pid_t server = -1;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_backend.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	server = -1;
}

static void teardown(void)
{
	char cmd[160];

	if (server > 0) {
		kill(server, SIGKILL);
		waitpid(server, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(backend, .init = setup, .fini = teardown);

static bool have(const char *tool)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

/* nbdkit in the foreground on a Unix socket in dir; argv after the
 * socket options.  Waits for the socket. */
static void start_nbdkit(const char *const *args)
{
	static char pidfile[128];
	const char *argv[16] = { "nbdkit", "-f", "-U", sock, "-P", pidfile };
	int n = 6;

	if (!have("nbdkit"))
		cr_skip_test("nbdkit is not installed (scripts/deps.sh)");
	snprintf(sock, sizeof(sock), "%s/nbd.sock", dir);
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", sock);
	/* nbdkit writes the PID file once it accepts connections */
	snprintf(pidfile, sizeof(pidfile), "%s/nbd.pid", dir);
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	server = fork();
	cr_assert_geq(server, 0);
	if (server == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 2);
		execvp("nbdkit", (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 400; i++) {
		struct stat st;

		if (stat(pidfile, &st) == 0 && st.st_size > 0)
			return;
		usleep(25000);
	}
	cr_assert_fail("nbdkit did not start");
}

Test(backend, names_select_backends)
{
	cr_assert_eq(img_backend_for("disk.img"), &img_backend_file);
	cr_assert_eq(img_backend_for("/dev/sda"), &img_backend_file);
	cr_assert_eq(img_backend_for("nbd://127.0.0.1:10809/x"),
		     &img_backend_nbd);
	cr_assert_eq(img_backend_for("nbd+unix:///x?socket=/s"),
		     &img_backend_nbd);
	cr_assert_eq(img_backend_for("rbd:pool/image@snap:conf=/c"),
		     &img_backend_rbd);
	cr_assert_eq(img_backend_for("http://127.0.0.1/a.vmdk"),
		     &img_backend_http);
	cr_assert_eq(img_backend_for("https://127.0.0.1/a.vmdk"),
		     &img_backend_http);
	/* a local file may be called "rbd" or "nbd" */
	cr_assert_eq(img_backend_for("rbd"), &img_backend_file);
	cr_assert_eq(img_backend_for("./nbd://x"), &img_backend_file);
	cr_assert(img_name_is_local("a/b.vdi"));
	cr_assert(!img_name_is_local("rbd:p/i"));
}

Test(backend, local_file_through_the_table)
{
	char path[128], buf[8192];
	struct img_file f = { 0 };
	uint64_t size, run;
	bool data;

	snprintf(path, sizeof(path), "%s/f.img", dir);
	cr_assert(!img_file_is_open(&f));
	img_file_close(&f); /* closing a zeroed handle is harmless */
	cr_assert_eq(img_file_create(&f, path, true, errbuf, sizeof(errbuf)), 0,
		     "%s", errbuf);
	cr_assert(img_file_is_open(&f));
	cr_assert_eq(img_file_truncate(&f, 1 << 20), 0);
	memset(buf, 0xab, sizeof(buf));
	cr_assert_eq(img_file_pwrite(&f, buf, sizeof(buf), 512 << 10), 0);
	cr_assert_eq(img_file_size(&f, &size), 0);
	cr_assert_eq(size, 1 << 20);
	cr_assert_eq(img_file_extent(&f, 0, 1 << 20, &data, &run), 0);
	cr_assert(!data, "the start is a hole");
	cr_assert_eq(run, 512 << 10);
	cr_assert(img_file_same(&f, path));
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(img_file_pread(&f, buf, 4096, 512 << 10), 0);
	cr_assert_eq((uint8_t)buf[4095], 0xab);
	cr_assert_eq(img_file_pread(&f, buf, 8192, (1 << 20) - 4096), -EIO);
	cr_assert(strstr(img_file_last_error(), "unexpected end of file"), "%s",
		  img_file_last_error());
	cr_assert_eq(img_file_pread_zero_eof(&f, buf, 8192, (1 << 20) - 4096),
		     0);
	cr_assert_eq((uint8_t)buf[8191], 0);
	cr_assert_eq(img_file_zero_range(&f, 512 << 10, 4096), 0);
	cr_assert_eq(img_file_pread(&f, buf, 4096, 512 << 10), 0);
	cr_assert(img_buf_is_zero(buf, 4096));
	cr_assert_eq(img_file_sync(&f), 0);
	img_file_close(&f);
	cr_assert(!img_file_is_open(&f));
}

Test(backend, rbd_names_are_checked_before_connecting)
{
	struct img_file f;

	cr_assert_eq(img_file_open_name(&f, "rbd:nopool", false, 0, errbuf,
					sizeof(errbuf)),
		     -EINVAL);
	cr_assert(strstr(errbuf, "rbd:POOL/IMAGE"), "%s", errbuf);
	cr_assert_eq(img_file_open_name(&f, "rbd:p/i:conf", false, 0, errbuf,
					sizeof(errbuf)),
		     -EINVAL);
	cr_assert(strstr(errbuf, "key=value"), "%s", errbuf);
	cr_assert_eq(img_file_open_name(&f, "rbd:p/i@s", true, 0, errbuf,
					sizeof(errbuf)),
		     -EROFS);
	cr_assert(strstr(errbuf, "snapshot s is read-only"), "%s", errbuf);
	cr_assert(!img_file_is_open(&f));
}

Test(backend, http_is_read_only_and_reports_refusal)
{
	struct img_file f;

	cr_assert_eq(img_file_open_name(&f, "http://127.0.0.1:1/x.img", true, 0,
					errbuf, sizeof(errbuf)),
		     -EROFS);
	cr_assert_eq(img_file_create(&f, "http://127.0.0.1:1/x.img", false,
				     errbuf, sizeof(errbuf)),
		     -ENOTSUP);
	setenv("IMG_BACKEND_TIMEOUT", "2", 1);
	cr_assert_lt(img_file_open_name(&f, "http://127.0.0.1:1/x.img", false,
					0, errbuf, sizeof(errbuf)),
		     0);
	cr_assert(strstr(errbuf, "onnect"), "%s", errbuf);
	unsetenv("IMG_BACKEND_TIMEOUT");
}

Test(backend, nbd_memory_export_read_write_zero_status)
{
	const char *args[] = { "memory", "16M", NULL };
	static char buf[1 << 20], back[1 << 20];
	struct iovec iov[3];
	struct img_file f;
	uint64_t size, run;
	bool data;

	start_nbdkit(args);
	cr_assert_eq(img_file_open_name(&f, uri, true, 0, errbuf,
					sizeof(errbuf)),
		     0, "%s", errbuf);
	cr_assert_eq(img_file_size(&f, &size), 0);
	cr_assert_eq(size, 16 << 20);
	cr_assert_eq(img_file_extent(&f, 0, 16 << 20, &data, &run), 0);
	cr_assert(!data && run == 16 << 20, "empty export: one hole");
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + i / 4096);
	/* a vector whose pieces are not aligned to anything */
	iov[0] = (struct iovec){ buf, 1000 };
	iov[1] = (struct iovec){ buf + 1000, 300000 };
	iov[2] = (struct iovec){ buf + 301000, sizeof(buf) - 301000 };
	cr_assert_eq(img_file_pwritev(&f, iov, 3, 3 << 20), 0, "%s",
		     img_file_last_error());
	cr_assert_eq(img_file_pread(&f, back, sizeof(back), 3 << 20), 0);
	cr_assert_eq(memcmp(buf, back, sizeof(buf)), 0);
	cr_assert_eq(img_file_extent(&f, 0, 16 << 20, &data, &run), 0);
	cr_assert(!data);
	cr_assert_eq(run, 3 << 20);
	cr_assert_eq(img_file_extent(&f, 3 << 20, 13 << 20, &data, &run), 0);
	cr_assert(data);
	cr_assert_eq(run, 1 << 20);
	cr_assert_eq(img_file_zero_range(&f, 3 << 20, 4096), 0);
	cr_assert_eq(img_file_pread(&f, back, 8192, 3 << 20), 0);
	cr_assert(img_buf_is_zero(back, 4096));
	cr_assert_eq(memcmp(back + 4096, buf + 4096, 4096), 0);
	cr_assert_eq(img_file_sync(&f), 0);
	/* the export cannot grow, nor be written past its end */
	cr_assert_eq(img_file_truncate(&f, 8 << 20), 0);
	cr_assert_eq(img_file_truncate(&f, 32 << 20), -ENOSPC);
	cr_assert_eq(img_file_pwrite(&f, buf, 4096, (16 << 20) - 2048),
		     -ENOSPC);
	cr_assert_eq(img_file_pread(&f, back, 4096, (16 << 20) - 2048), -EIO);
	cr_assert_eq(img_file_pread_zero_eof(&f, back, 4096, (16 << 20) - 2048),
		     0);
	cr_assert(img_buf_is_zero(back + 2048, 2048));
	img_file_close(&f);
}

Test(backend, nbd_image_formats_probe_over_nbd)
{
	const char *args[] = { "memory", "64M", NULL };
	struct img_create_options co = { .format = "vdi", .size = 32 << 20 };
	char fmt[16];
	struct img *img;
	static char buf[65536], back[65536];

	start_nbdkit(args);
	cr_assert_eq(img_create(uri, &co, errbuf, sizeof(errbuf)), 0, "%s",
		     errbuf);
	cr_assert_eq(img_probe(uri, fmt, sizeof(fmt), errbuf, sizeof(errbuf)),
		     0, "%s", errbuf);
	cr_assert_str_eq(fmt, "vdi");
	cr_assert_eq(
		img_open(&img, uri,
			 &(struct img_open_options){ .flags = IMG_OPEN_RDWR },
			 errbuf, sizeof(errbuf)),
		0, "%s", errbuf);
	cr_assert_eq(img_size(img), 32 << 20);
	memset(buf, 0x5a, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 1 << 20), 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(img_open(&img, uri, NULL, errbuf, sizeof(errbuf)), 0);
	cr_assert_eq(img_pread(img, back, sizeof(back), 1 << 20), 0);
	cr_assert_eq(memcmp(buf, back, sizeof(back)), 0);
	img_close(img);
}

Test(backend, nbd_silent_server_times_out)
{
	const char *args[] = { "--filter=delay", "memory", "1M",
			       "delay-read=60", NULL };
	struct img_file f;
	char buf[512];
	time_t start;

	start_nbdkit(args);
	setenv("IMG_BACKEND_TIMEOUT", "1", 1);
	cr_assert_eq(img_file_open_name(&f, uri, false, 0, errbuf,
					sizeof(errbuf)),
		     0, "%s", errbuf);
	start = time(NULL);
	cr_assert_eq(img_file_pread(&f, buf, sizeof(buf), 0), -ETIMEDOUT);
	cr_assert_leq(time(NULL) - start, 5);
	cr_assert(strstr(img_file_last_error(), "no answer from the server"),
		  "%s", img_file_last_error());
	/* the connection is not used again: the next read fails at once */
	cr_assert_lt(img_file_pread(&f, buf, sizeof(buf), 0), 0);
	img_file_close(&f);
	unsetenv("IMG_BACKEND_TIMEOUT");
}

Test(backend, nbd_server_gone)
{
	const char *args[] = { "memory", "1M", NULL };
	struct img_file f;
	char buf[512];

	start_nbdkit(args);
	cr_assert_eq(img_file_open_name(&f, uri, false, 0, errbuf,
					sizeof(errbuf)),
		     0, "%s", errbuf);
	kill(server, SIGKILL);
	waitpid(server, NULL, 0);
	server = -1;
	cr_assert_lt(img_file_pread(&f, buf, sizeof(buf), 0), 0);
	cr_assert(strstr(img_file_last_error(), "server") ||
			  strstr(img_file_last_error(), "connection"),
		  "%s", img_file_last_error());
	img_file_close(&f);
}

Test(backend, allocation_learnt_is_kept_until_a_write)
{
	static struct img_extent_cache cache, filled;
	uint64_t run, generation;
	bool data;

	img_extent_cache_init(&cache);
	cr_assert(!img_extent_cache_lookup(&cache, 0, 100, &data, &run));
	img_extent_cache_begin(&filled, 4096);
	cr_assert(img_extent_cache_append(&filled, 4096, true));
	cr_assert(img_extent_cache_append(&filled, 4096, true)); /* merged */
	cr_assert(img_extent_cache_append(&filled, 65536, false));
	cr_assert(img_extent_cache_append(&filled, 512, true));
	cr_assert_eq(filled.n, 3);
	generation = img_extent_cache_generation(&cache);
	img_extent_cache_install(&cache, &filled, generation);
	cr_assert(!img_extent_cache_lookup(&cache, 0, 100, &data, &run),
		  "before the window");
	cr_assert(img_extent_cache_lookup(&cache, 4096 + 100, 1 << 20, &data,
					  &run));
	cr_assert(data);
	cr_assert_eq(run, 8192 - 100);
	cr_assert(img_extent_cache_lookup(&cache, 20000, 1000, &data, &run));
	cr_assert(!data);
	cr_assert_eq(run, 1000, "at most what was asked");
	cr_assert(img_extent_cache_lookup(&cache, 12288 + 65536, 4096, &data,
					  &run));
	cr_assert(data);
	cr_assert_eq(run, 512);
	cr_assert(!img_extent_cache_lookup(&cache, 12288 + 65536 + 512, 1,
					   &data, &run),
		  "past the window");
	/* a write in between: a window learnt before it is not installed */
	img_extent_cache_clear(&cache);
	cr_assert(!img_extent_cache_lookup(&cache, 4096, 1, &data, &run));
	img_extent_cache_install(&cache, &filled, generation);
	cr_assert(!img_extent_cache_lookup(&cache, 4096, 1, &data, &run));
	/* full: append says so, what is there stays */
	img_extent_cache_begin(&filled, 0);
	for (int i = 0; i < IMG_EXTENT_CACHE_MAX; i++)
		cr_assert(img_extent_cache_append(&filled, 1, i % 2));
	cr_assert(
		!img_extent_cache_append(&filled, 1, IMG_EXTENT_CACHE_MAX % 2));
	cr_assert_eq(filled.end, IMG_EXTENT_CACHE_MAX);
	img_extent_cache_destroy(&cache);
}

/* "disk size" of an export: the extents base:allocation does not call
 * holes, asked over the handle already open (or a new connection when
 * none is); a local file's blocks; remove by name. */
Test(backend, allocated_by_name_and_remove)
{
	const char *args[] = { "memory", "16M", NULL };
	static char buf[1 << 20];
	char path[128];
	struct img_file f;
	uint64_t bytes, closed;
	int fd;

	start_nbdkit(args);
	cr_assert_eq(img_file_open_name(&f, uri, true, 0, errbuf,
					sizeof(errbuf)),
		     0, "%s", errbuf);
	cr_assert_eq(img_file_allocated_name(uri, &bytes), 0);
	cr_assert_eq(bytes, 0, "an empty export holds nothing");
	memset(buf, 0x5a, sizeof(buf));
	cr_assert_eq(img_file_pwrite(&f, buf, sizeof(buf), 5 << 20), 0);
	cr_assert_eq(img_file_allocated_name(uri, &bytes), 0);
	cr_assert_eq(bytes, 1 << 20, "one MiB written: %llu",
		     (unsigned long long)bytes);
	img_file_close(&f);
	/* no open handle: a connection of its own, the same answer */
	cr_assert_eq(img_file_allocated_name(uri, &closed), 0);
	cr_assert_eq(closed, bytes);
	cr_assert_eq(img_remove(uri, errbuf, sizeof(errbuf)), -ENOTSUP);

	snprintf(path, sizeof(path), "%s/f.raw", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	close(fd);
	cr_assert_eq(img_file_allocated_name(path, &bytes), 0);
	cr_assert_geq(bytes, 1 << 20);
	cr_assert_eq(img_remove(path, errbuf, sizeof(errbuf)), 0, "%s", errbuf);
	cr_assert_eq(access(path, F_OK), -1, "the file is gone");
	cr_assert_eq(img_remove(path, errbuf, sizeof(errbuf)), 0,
		     "removing what is not there is not an error");
	cr_assert_eq(img_file_allocated_name("http://127.0.0.1:1/x", &bytes),
		     -ENOTSUP);
}

/* The backends' libraries load at first use: a missing one, or one without
 * a function we call, is one error line naming what to install; a present
 * one fills every pointer.  (zlib stands in: every build links it.) */
#define ZLIB_FUNCTIONS(X) X(zlibVersion) X(crc32)
IMG_DYNLIB_DEFINE(zlib, ZLIB_FUNCTIONS, "libz.so.1", "zlib1g");

Test(backend, dynlib_loads_at_first_use)
{
	static const char *const absent_names[] = { "zlibVersion", NULL };
	static const char *const wrong_names[] = { "zlibVersion",
						   "img_no_such_function",
						   NULL };
	struct img_dynlib absent = IMG_DYNLIB_INIT("libimg-absent.so.7",
						   "libimg-absent7",
						   absent_names, &zlib_lib);
	struct img_dynlib wrong =
		IMG_DYNLIB_INIT("libz.so.1", "zlib1g", wrong_names, &zlib_lib);

	cr_assert_eq(img_dynlib_load(&absent, errbuf, sizeof(errbuf)),
		     -ENOTSUP);
	cr_assert(strstr(errbuf, "libimg-absent.so.7 is not installed "
				 "(Debian package libimg-absent7)"),
		  "%s", errbuf);
	cr_assert_null(strchr(errbuf, '\n'), "one line: %s", errbuf);
	errbuf[0] = 0;
	cr_assert_eq(img_dynlib_load(&absent, errbuf, sizeof(errbuf)), -ENOTSUP,
		     "the first outcome stays");
	cr_assert(strstr(errbuf, "libimg-absent.so.7"), "%s", errbuf);

	cr_assert_eq(img_dynlib_load(&wrong, errbuf, sizeof(errbuf)), -ENOTSUP);
	cr_assert(strstr(errbuf, "libz.so.1 has no img_no_such_function"), "%s",
		  errbuf);

	zlib_lib.zlibVersion = NULL;
	zlib_lib.crc32 = NULL;
	cr_assert_eq(img_dynlib_load(&zlib_library, errbuf, sizeof(errbuf)), 0,
		     "%s", errbuf);
	cr_assert_eq(zlib_lib.zlibVersion, zlibVersion,
		     "the same function the program links");
	cr_assert_str_eq(zlib_lib.zlibVersion(), zlibVersion());
	cr_assert_eq(zlib_lib.crc32(0, (const Bytef *)"abc", 3),
		     crc32(0, (const Bytef *)"abc", 3));
}
