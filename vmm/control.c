// SPDX-License-Identifier: MIT
/*
 * The control protocol of a running VM (see control.h, docs/control.md):
 * the server thread and the client call (the request parser is in
 * control_request.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vmm/control.h"
#include "vmm/display/display.h"
#include "vmm/input.h"
#include "vmm/devices/ahci.h"
#include "vmm/pc.h"

/* ---- carrying out a request --------------------------------------------*/

struct control_client {
	int fd;
	char *in;
	size_t in_len;
	char *out;
	size_t out_len, out_sent;
	bool closing; /* write out what is pending, then close */
};

struct control {
	struct pc *pc;
	char *path;
	int listen_fd;
	int wake[2];
	pthread_t thread;
	struct timespec started;
	struct control_client client[CONTROL_CLIENTS_MAX];
	size_t nclients;
};

static json_object *reply_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static json_object *reply_error(const char *fmt, ...)
{
	json_object *r = json_object_new_object();
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	json_object_object_add(r, "ok", json_object_new_boolean(0));
	json_object_object_add(r, "error", json_object_new_string(text));
	return r;
}

static json_object *reply_ok(void)
{
	json_object *r = json_object_new_object();

	json_object_object_add(r, "ok", json_object_new_boolean(1));
	return r;
}

static json_object *control_status(struct control *ctl)
{
	struct pc *pc = ctl->pc;
	json_object *r = reply_ok(), *disks = json_object_new_array();
	struct timespec now;
	char *medium;

	clock_gettime(CLOCK_MONOTONIC, &now);
	json_object_object_add(
		r, "state",
		json_object_new_string(
			pc->vm && vmm_paused(pc->vm) ? "paused" : "running"));
	json_object_object_add(
		r, "uptime",
		json_object_new_int64(now.tv_sec - ctl->started.tv_sec));
	json_object_object_add(r, "vcpus", json_object_new_int(pc->opt.cpus));
	json_object_object_add(r, "memory",
			       json_object_new_int64((int64_t)pc->opt.memory));
	for (unsigned i = 0; i < pc->opt.ndisks; i++) {
		json_object *d = json_object_new_object();
		uint64_t rd, wr;

		ahci_disk_counters(pc->ahci, i, &rd, &wr);
		json_object_object_add(
			d, "path",
			json_object_new_string(pc->opt.disk[i].path));
		json_object_object_add(
			d, "read_only",
			json_object_new_boolean(pc->opt.disk[i].read_only));
		json_object_object_add(d, "bytes_read",
				       json_object_new_int64((int64_t)rd));
		json_object_object_add(d, "bytes_written",
				       json_object_new_int64((int64_t)wr));
		json_object_array_add(disks, d);
	}
	json_object_object_add(r, "disks", disks);
	if (ahci_has_cdrom(pc->ahci)) {
		json_object *cd = json_object_new_object();

		medium = ahci_cdrom_medium(pc->ahci);
		json_object_object_add(cd, "medium",
				       medium ? json_object_new_string(medium)
					      : NULL);
		free(medium);
		json_object_object_add(r, "cdrom", cd);
	} else {
		json_object_object_add(r, "cdrom", NULL);
	}
	return r;
}

/* The keysym that types c on a US keyboard, and whether Shift is held. */
static uint32_t char_keysym(char c, bool *shift)
{
	static const char shifted[] = "~!@#$%^&*()_+{}|:\"<>?";

	*shift = (c >= 'A' && c <= 'Z') || (c && strchr(shifted, c));
	switch (c) {
	case '\n':
		return 0xff0d; /* Return */
	case '\t':
		return 0xff09; /* Tab */
	case '\b':
		return 0xff08; /* BackSpace */
	case 0x1b:
		return 0xff1b; /* Escape */
	default:
		return c >= 0x20 && c < 0x7f ? (uint32_t)(unsigned char)c : 0;
	}
}

/* One key event; while the guest's keyboard queue is full, wait for it
 * (at most 2 s: a guest that does not read its keyboard gets an error). */
static int key_event(struct i8042 *kbc, uint32_t keysym, bool down)
{
	for (int tries = 0; tries < 200; tries++) {
		int ret = input_key_keysym(kbc, keysym, down);

		if (ret != -EAGAIN)
			return ret;
		usleep(10000);
	}
	return -EAGAIN;
}

/* Types text as key presses (ASCII, \n Enter, \t Tab, \b Backspace, ESC);
 * anything else is refused before a key is sent. */
static json_object *send_keys(struct pc *pc, const char *text)
{
	size_t len = strlen(text);
	bool shift;

	if (!pc->kbc || !pc->screen.display)
		return reply_error("no display: start the VM with --vga std "
				   "or --vnc to have a keyboard to type on");
	if (len > 4096)
		return reply_error("sendkeys: at most 4096 characters");
	for (size_t i = 0; i < len; i++)
		if (!char_keysym(text[i], &shift))
			return reply_error(
				"sendkeys: character %zu (0x%02x) has "
				"no key on a US keyboard",
				i, (unsigned char)text[i]);
	for (size_t i = 0; i < len; i++) {
		uint32_t keysym = char_keysym(text[i], &shift);
		int ret = 0;

		if (shift)
			ret = key_event(pc->kbc, 0xffe1, true);
		if (!ret)
			ret = key_event(pc->kbc, keysym, true);
		if (!ret)
			ret = key_event(pc->kbc, keysym, false);
		if (shift && !ret)
			ret = key_event(pc->kbc, 0xffe1, false);
		if (ret)
			return reply_error(
				"sendkeys: the guest does not read its "
				"keyboard (%zu of %zu characters "
				"typed)",
				i, len);
	}
	return reply_ok();
}

static json_object *control_execute(struct control *ctl,
				    const struct control_request *req)
{
	struct pc *pc = ctl->pc;
	char err[512];
	json_object *r;

	switch (req->command) {
	case CONTROL_STATUS:
		return control_status(ctl);
	case CONTROL_EJECT:
		if (!ahci_has_cdrom(pc->ahci))
			return reply_error("this machine has no CD-ROM drive");
		ahci_eject_cdrom(pc->ahci);
		return reply_ok();
	case CONTROL_INSERT:
		if (ahci_insert_cdrom(pc->ahci, req->argument, err,
				      sizeof(err)))
			return reply_error("%s", err);
		return reply_ok();
	case CONTROL_POWERBUTTON: {
		bool seen = pc->piix && piix_press_power_button(pc->piix);

		r = reply_ok();
		/* a guest not in ACPI mode (or ignoring the button) will
		 * not shut down: say so */
		json_object_object_add(r, "guest_listening",
				       json_object_new_boolean(seen));
		return r;
	}
	case CONTROL_RESET:
		if (pc->vm)
			vmm_request_reset(pc->vm);
		return reply_ok();
	case CONTROL_PAUSE:
	case CONTROL_RESUME:
		if (pc->vm)
			vmm_set_paused(pc->vm, req->command == CONTROL_PAUSE);
		return reply_ok();
	case CONTROL_STOP:
		if (pc->vm)
			vmm_request_poweroff(pc->vm);
		return reply_ok();
	case CONTROL_SCREENSHOT:
		if (!pc->screen.display)
			return reply_error("no display: start the VM with "
					   "--vga std or --vnc to have a "
					   "screen");
		if (display_screenshot(pc->screen.display, req->argument, err,
				       sizeof(err)))
			return reply_error("%s", err);
		return reply_ok();
	case CONTROL_SENDKEYS:
		return send_keys(pc, req->argument);
	}
	return reply_error("unknown command");
}

/* ---- the server --------------------------------------------------------*/

static void client_queue(struct control_client *c, json_object *reply)
{
	const char *text = json_object_to_json_string_ext(
		reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t len = strlen(text);
	char *grown;

	if (c->out_len - c->out_sent + len + 1 > CONTROL_PENDING_MAX) {
		/* it does not read its replies: cut it off */
		c->closing = true;
		c->out_len = c->out_sent = 0;
		close(c->fd);
		c->fd = -1;
		json_object_put(reply);
		return;
	}
	if (c->out_sent) {
		memmove(c->out, c->out + c->out_sent, c->out_len - c->out_sent);
		c->out_len -= c->out_sent;
		c->out_sent = 0;
	}
	grown = realloc(c->out, c->out_len + len + 1);
	if (grown) {
		c->out = grown;
		memcpy(c->out + c->out_len, text, len);
		c->out[c->out_len + len] = '\n';
		c->out_len += len + 1;
	}
	json_object_put(reply);
}

static void client_request(struct control *ctl, struct control_client *c,
			   const char *line, size_t len)
{
	struct control_request req;
	char err[256];

	if (control_parse_request(line, len, &req, err, sizeof(err))) {
		client_queue(c, reply_error("%s", err));
		return;
	}
	client_queue(c, control_execute(ctl, &req));
	control_request_free(&req);
}

static void client_read(struct control *ctl, struct control_client *c)
{
	ssize_t n;
	size_t start = 0;

	if (!c->in && !(c->in = malloc(CONTROL_LINE_MAX + 1))) {
		c->closing = true;
		return;
	}
	n = read(c->fd, c->in + c->in_len, CONTROL_LINE_MAX + 1 - c->in_len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* the client is done sending; what it sent without a newline
		 * is dropped, the replies still go out */
		c->closing = true;
		return;
	}
	c->in_len += (size_t)n;
	for (size_t i = 0; i < c->in_len && !c->closing; i++) {
		if (c->in[i] != '\n')
			continue;
		if (i > start)
			client_request(ctl, c, c->in + start, i - start);
		start = i + 1;
	}
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	if (c->in_len > CONTROL_LINE_MAX && !c->closing) {
		client_queue(c, reply_error("request longer than %d bytes",
					    CONTROL_LINE_MAX));
		c->closing = true;
	}
}

static void client_write(struct control_client *c)
{
	while (c->fd >= 0 && c->out_sent < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_sent,
				 c->out_len - c->out_sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			c->closing = true;
			c->out_len = c->out_sent = 0;
			return;
		}
		c->out_sent += (size_t)n;
	}
	c->out_len = c->out_sent = 0;
}

static void client_close(struct control_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static void control_accept(struct control *ctl)
{
	int fd = accept4(ctl->listen_fd, NULL, NULL,
			 SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (ctl->nclients == CONTROL_CLIENTS_MAX) {
		static const char busy[] =
			"{\"ok\":false,\"error\":\"too many control "
			"clients\"}\n";

		send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
		return;
	}
	memset(&ctl->client[ctl->nclients], 0, sizeof(ctl->client[0]));
	ctl->client[ctl->nclients++].fd = fd;
}

static void *control_thread(void *opaque)
{
	struct control *ctl = opaque;
	struct pollfd pfd[2 + CONTROL_CLIENTS_MAX];

	for (;;) {
		size_t n = 0;

		pfd[n++] =
			(struct pollfd){ .fd = ctl->wake[0], .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = ctl->listen_fd,
					    .events = POLLIN };
		for (size_t i = 0; i < ctl->nclients; i++) {
			struct control_client *c = &ctl->client[i];

			pfd[n++] = (struct pollfd){
				.fd = c->fd,
				.events = (c->closing ? 0 : POLLIN) |
					  (c->out_len > c->out_sent ? POLLOUT
								    : 0),
			};
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		for (size_t i = 0; i < ctl->nclients; i++) {
			struct control_client *c = &ctl->client[i];
			short ev = pfd[2 + i].revents;

			if (ev & POLLIN)
				client_read(ctl, c);
			if (c->fd >= 0 && (ev & (POLLOUT | POLLIN)))
				client_write(c);
			if (c->fd >= 0 && (ev & (POLLERR | POLLNVAL)))
				c->closing = true, c->out_len = c->out_sent = 0;
			if (ev & POLLHUP && !(ev & POLLIN))
				c->closing = true, c->out_len = c->out_sent = 0;
		}
		/* drop the finished clients (pfd indexes are not used past
		 * here) */
		for (size_t i = 0; i < ctl->nclients;) {
			struct control_client *c = &ctl->client[i];

			if (c->fd < 0 ||
			    (c->closing && c->out_len == c->out_sent)) {
				client_close(c);
				ctl->client[i] = ctl->client[--ctl->nclients];
			} else {
				i++;
			}
		}
		if (pfd[1].revents & POLLIN)
			control_accept(ctl);
	}
	return NULL;
}

struct control *control_start(const char *path, struct pc *pc, char *err,
			      size_t errlen)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old_mask;

	if (!ctl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctl->pc = pc;
	ctl->listen_fd = -1;
	ctl->wake[0] = ctl->wake[1] = -1;
	clock_gettime(CLOCK_MONOTONIC, &ctl->started);
	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen,
			 "--control %s: path too long for a socket", path);
		goto fail;
	}
	strcpy(addr.sun_path, path);
	/* a socket left behind by an imgvm that died is replaced; anything
	 * else at that path is not ours to remove */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen,
				 "--control %s: exists and is not a socket",
				 path);
			goto fail;
		}
		unlink(path);
	}
	ctl->path = strdup(path);
	ctl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (!ctl->path || ctl->listen_fd < 0 || pipe2(ctl->wake, O_CLOEXEC)) {
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		goto fail;
	}
	/* created 0600 from the start: no window in which others connect */
	old_mask = umask(0177);
	if (bind(ctl->listen_fd, (struct sockaddr *)&addr, sizeof(addr))) {
		umask(old_mask);
		/* 9p, some FUSE and network file systems hold no sockets */
		snprintf(err, errlen, "--control %s: %s%s", path,
			 strerror(errno),
			 errno == ENXIO || errno == EOPNOTSUPP
				 ? " (this file system cannot hold a socket: "
				   "give --control a path on a local one)"
				 : "");
		goto fail;
	}
	umask(old_mask);
	if (listen(ctl->listen_fd, 16) ||
	    fcntl(ctl->listen_fd, F_SETFL, O_NONBLOCK)) {
		snprintf(err, errlen, "--control %s: %s", path,
			 strerror(errno));
		unlink(path);
		goto fail;
	}
	if (pthread_create(&ctl->thread, NULL, control_thread, ctl)) {
		snprintf(err, errlen,
			 "control socket: cannot start its thread");
		unlink(path);
		goto fail;
	}
	return ctl;
fail:
	if (ctl->listen_fd >= 0)
		close(ctl->listen_fd);
	if (ctl->wake[0] >= 0) {
		close(ctl->wake[0]);
		close(ctl->wake[1]);
	}
	free(ctl->path);
	free(ctl);
	return NULL;
}

void control_stop(struct control *ctl)
{
	if (!ctl)
		return;
	if (write(ctl->wake[1], "x", 1) < 0) {
		/* the pipe is empty and ours: cannot fail but for EINTR */
	}
	pthread_join(ctl->thread, NULL);
	for (size_t i = 0; i < ctl->nclients; i++)
		client_close(&ctl->client[i]);
	close(ctl->listen_fd);
	close(ctl->wake[0]);
	close(ctl->wake[1]);
	unlink(ctl->path);
	free(ctl->path);
	free(ctl);
}

/* ---- the client --------------------------------------------------------*/

int control_call(const char *socket_path, const char *request, char **reply,
		 char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	size_t len = strlen(request), done = 0, cap = 4096, got = 0;
	char *buf = NULL;
	int fd, ret;

	*reply = NULL;
	if (strlen(socket_path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "%s: path too long for a socket",
			 socket_path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", socket_path,
			 errno == ENOENT || errno == ECONNREFUSED
				 ? "the VM is not running (no control socket)"
				 : strerror(errno));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	while (done <= len) {
		/* the request, then its newline */
		const char *p = done < len ? request + done : "\n";
		size_t n = done < len ? len - done : 1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto io_error;
		done += (size_t)w;
	}
	buf = malloc(cap);
	if (!buf)
		goto io_error;
	for (;;) {
		ssize_t r;
		char *nl;

		if (got + 1 == cap) {
			char *grown = cap < (16u << 20) ? realloc(buf, cap * 2)
							: NULL;

			if (!grown)
				goto io_error;
			buf = grown;
			cap *= 2;
		}
		r = read(fd, buf + got, cap - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			goto io_error;
		got += (size_t)r;
		buf[got] = 0;
		if ((nl = memchr(buf, '\n', got))) {
			*nl = 0;
			break;
		}
	}
	close(fd);
	*reply = buf;
	return 0;
io_error:
	ret = errno ? -errno : -EIO;
	snprintf(err, errlen, "%s: no reply: %s", socket_path,
		 errno ? strerror(errno) : "connection closed");
	free(buf);
	close(fd);
	return ret;
}
