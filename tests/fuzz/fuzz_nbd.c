/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: the NBD server's handshake (options, export names,
 * meta contexts) and transmission (request headers, payloads, flags)
 * parsing.  The fuzzer's bytes are what a client sends over one connected
 * socket; the server runs for real on the other end (nbd_server_serve_fd)
 * and its replies are drained until it hangs up.  Two exports: a raw image
 * ("" and "raw") and a dynamic VDI ("vdi"), both writable.
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * fuzz-sources: nbd/handshake.c nbd/io.c nbd/server.c nbd/transmission.c
 */
#include "img.h"
#include "nbd/nbd_server.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct nbd_server *srv;
static struct img *raw_img, *vdi_img;

static struct img *fuzz_image(const char *dir, const char *fmt, uint64_t size)
{
	struct img_create_options co = { .format = fmt, .size = size };
	struct img_open_options oo = { .format = fmt, .flags = IMG_OPEN_RDWR };
	char path[128], err[256];
	struct img *img;

	snprintf(path, sizeof(path), "%s/disk.%s", dir, fmt);
	if (img_create(path, &co, err, sizeof(err)) < 0 ||
	    img_open(&img, path, &oo, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_nbd: %s\n", err);
		abort();
	}
	return img;
}

static void fuzz_setup(void)
{
	static char dir[] = "/tmp/fuzz-nbd-XXXXXX";
	struct nbd_server_options opts = { .workers = 2 };
	char err[256];

	if (!mkdtemp(dir))
		abort();
	raw_img = fuzz_image(dir, "raw", 1u << 20);
	vdi_img = fuzz_image(dir, "vdi", 4u << 20);
	if (nbd_server_new(&srv, &opts, err, sizeof(err)) < 0 ||
	    nbd_server_add_export(srv, "raw", "fuzz raw", raw_img, false) < 0 ||
	    nbd_server_add_export(srv, "vdi", NULL, vdi_img, false) < 0)
		abort();
}

/* The server neither answered nor hung up for a minute: show where its
 * threads are (FUZZ_NBD_GDB=1), then fail the input. */
static void fuzz_hung(size_t sent, size_t size)
{
	char cmd[160];

	fprintf(stderr, "fuzz_nbd: server hung (%zu of %zu bytes sent)\n", sent,
		size);
	if (getenv("FUZZ_NBD_GDB")) {
		snprintf(
			cmd, sizeof(cmd),
			"ls -l /proc/%d/fd >&2; gdb -p %d -batch -ex 'thread apply all bt 12' >&2",
			(int)getpid(), (int)getpid());
		if (system(cmd) < 0)
			perror("gdb");
	}
	abort();
}

/* Send data to the server and read its replies until it closes, without
 * letting either side block on a full socket buffer. */
static void fuzz_converse(int fd, const uint8_t *data, size_t size)
{
	static uint8_t sink[65536];
	size_t sent = 0;
	bool shut = false;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (!shut)
			p.events |= POLLOUT;
		int ready = poll(&p, 1, 60000);
		/* libFuzzer's -timeout timer (SIGALRM) interrupts poll */
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
			fuzz_hung(sent, size);
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
			if (n == 0 ||
			    (n < 0 && errno != EAGAIN && errno != EINTR))
				return;
		}
		if (!shut && (p.revents & POLLOUT)) {
			ssize_t n = 0;
			if (sent < size)
				n = send(fd, data + sent, size - sent,
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			if (sent == size || (n < 0 && errno != EAGAIN)) {
				shutdown(fd, SHUT_WR);
				shut = true;
			}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];

	if (!srv)
		fuzz_setup();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (nbd_server_serve_fd(srv, sv[0]) < 0)
		abort();
	fuzz_converse(sv[1], data, size);
	close(sv[1]);
	return 0;
}
