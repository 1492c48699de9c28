// SPDX-License-Identifier: MIT
/*
 * VNC through LibVNCServer: the library speaks RFB (handshake,
 * authentication, encodings, clipping of requests, dropping clients that
 * break the protocol); this file chooses where to listen, tells it which
 * rectangles changed, and passes keys and pointer to the input API.
 *
 * Listening is on the loopback interface unless the address says
 * otherwise; IPv6 only for a bracketed address.  A UNIX socket is
 * accepted here and handed to the library as a connected client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <rfb/rfb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmm/display/vnc.h"
#include "vmm/input.h"

#define VNC_BASE_PORT 5900
/* a viewer that stops reading is dropped after this long, so that it
 * cannot hold the display thread */
#define VNC_CLIENT_WAIT_MS 5000

struct vnc_server {
	rfbScreenInfoPtr screen;
	struct i8042 *kbc;
	struct usb_tablet *tablet;
	int unix_fd;
	char *unix_path;
	char *passwords[2];
	int last_x, last_y;
	unsigned last_buttons;
	bool pointer_seen;
	bool input_seen;
};

static void vnc_key(rfbBool down, rfbKeySym keysym, rfbClientPtr cl)
{
	struct vnc_server *vnc = cl->screen->screenData;

	vnc->input_seen = true;
	if (vnc->kbc)
		input_key_keysym(vnc->kbc, keysym, down);
}

/* RFB buttons: 1 left, 2 middle, 4 right, 8/16 wheel up/down */
static void vnc_pointer(int mask, int x, int y, rfbClientPtr cl)
{
	struct vnc_server *vnc = cl->screen->screenData;
	unsigned buttons = 0;
	int wheel = 0;

	vnc->input_seen = true;
	if (mask & 1)
		buttons |= INPUT_BUTTON_LEFT;
	if (mask & 2)
		buttons |= INPUT_BUTTON_MIDDLE;
	if (mask & 4)
		buttons |= INPUT_BUTTON_RIGHT;
	if (mask & 8)
		wheel = -1;
	if (mask & 16)
		wheel = 1;
	if (vnc->tablet) {
		/* absolute: the guest's pointer lands where the viewer's is */
		usb_tablet_pointer_event(
			vnc->tablet,
			input_absolute_position(x, cl->screen->width),
			input_absolute_position(y, cl->screen->height), wheel,
			buttons);
		rfbDefaultPtrAddEvent(mask, x, y, cl);
		return;
	}
	if (!vnc->pointer_seen) {
		vnc->last_x = x;
		vnc->last_y = y;
		vnc->pointer_seen = true;
	}
	/* viewers repeat events that change nothing */
	if (vnc->kbc && (x != vnc->last_x || y != vnc->last_y || wheel ||
			 buttons != vnc->last_buttons))
		i8042_mouse_event(vnc->kbc, x - vnc->last_x, y - vnc->last_y,
				  wheel, buttons);
	vnc->last_buttons = buttons;
	vnc->last_x = x;
	vnc->last_y = y;
	rfbDefaultPtrAddEvent(mask, x, y, cl);
}

static void vnc_quiet_log(const char *format, ...)
{
	(void)format;
}

static int vnc_read_password(struct vnc_server *vnc, const char *path,
			     char *err, size_t errlen)
{
	char line[256];
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f) {
		snprintf(err, errlen, "--vnc-password-file: %s: %s", path,
			 strerror(errno));
		return -errno;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	n = strcspn(line, "\r\n");
	line[n] = '\0';
	if (!n) {
		snprintf(err, errlen, "--vnc-password-file: %s is empty", path);
		return -EINVAL;
	}
	vnc->passwords[0] = strdup(line);
	vnc->passwords[1] = NULL;
	return vnc->passwords[0] ? 0 : -ENOMEM;
}

static int vnc_listen_unix(struct vnc_server *vnc, const char *path, char *err,
			   size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "--vnc unix:%s: path too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	vnc->unix_fd =
		socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (vnc->unix_fd < 0)
		goto fail;
	unlink(path);
	if (bind(vnc->unix_fd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(vnc->unix_fd, 4))
		goto fail;
	vnc->unix_path = strdup(path);
	return 0;
fail:
	snprintf(err, errlen, "--vnc unix:%s: %s", path, strerror(errno));
	return -errno;
}

/* Fills the screen's listening address from spec. */
static int vnc_parse_address(struct vnc_server *vnc, const char *spec,
			     char *err, size_t errlen)
{
	rfbScreenInfoPtr s = vnc->screen;
	const char *colon = strrchr(spec, ':');
	char host[128];
	char *end;
	unsigned long number;

	s->port = 0;
	s->ipv6port = 0;
	s->autoPort = FALSE;
	if (!strncmp(spec, "unix:", 5))
		return vnc_listen_unix(vnc, spec + 5, err, errlen);
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		goto bad;
	errno = 0;
	number = strtoul(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end)
		goto bad;
	memcpy(host, spec, colon - spec);
	host[colon - spec] = '\0';
	if (!host[0]) {
		/* ":N" is display N */
		if (number > 65535 - VNC_BASE_PORT)
			goto bad;
		s->port = VNC_BASE_PORT + number;
		s->listenInterface = htonl(INADDR_LOOPBACK);
		return 0;
	}
	if (number < 1 || number > 65535)
		goto bad;
	if (host[0] == '[') {
		size_t len = strlen(host);
		struct in6_addr a6;

		if (len < 3 || host[len - 1] != ']')
			goto bad;
		host[len - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &a6) != 1)
			goto bad;
		s->listen6Interface = strdup(host + 1);
		s->ipv6port = number;
		return s->listen6Interface ? 0 : -ENOMEM;
	}
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	{
		struct in_addr a4;

		if (inet_pton(AF_INET, host, &a4) != 1)
			goto bad;
		s->listenInterface = a4.s_addr;
	}
	s->port = number;
	return 0;
bad:
	snprintf(err, errlen,
		 "--vnc must be HOST:PORT, [IPV6]:PORT, :DISPLAY or "
		 "unix:PATH, not '%s'",
		 spec);
	return -EINVAL;
}

struct vnc_server *vnc_server_create(const char *spec,
				     const char *password_file,
				     struct i8042 *kbc,
				     struct usb_tablet *tablet,
				     uint32_t *pixels, unsigned width,
				     unsigned height, char *err, size_t errlen)
{
	struct vnc_server *vnc = calloc(1, sizeof(*vnc));
	int argc = 0;

	if (!vnc) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	vnc->unix_fd = -1;
	vnc->kbc = kbc;
	vnc->tablet = tablet;
	rfbLog = vnc_quiet_log;
	rfbErr = vnc_quiet_log;
	vnc->screen = rfbGetScreen(&argc, NULL, width, height, 8, 3, 4);
	if (!vnc->screen) {
		snprintf(err, errlen, "cannot set up the VNC server");
		goto fail;
	}
	vnc->screen->screenData = vnc;
	vnc->screen->frameBuffer = (char *)pixels;
	vnc->screen->desktopName = "imgvm";
	vnc->screen->alwaysShared = TRUE;
	vnc->screen->kbdAddEvent = vnc_key;
	vnc->screen->ptrAddEvent = vnc_pointer;
	vnc->screen->maxClientWait = VNC_CLIENT_WAIT_MS;
	/* the guest draws its own pointer; the library's would be painted
	 * into the frame */
	vnc->screen->cursor = NULL;
	vnc->screen->httpPort = 0;
	vnc->screen->httpDir = NULL;
	if (vnc_parse_address(vnc, spec, err, errlen))
		goto fail;
	if (password_file) {
		if (vnc_read_password(vnc, password_file, err, errlen))
			goto fail;
		vnc->screen->authPasswdData = vnc->passwords;
		vnc->screen->passwordCheck = rfbCheckPasswordByList;
	}
	rfbInitServer(vnc->screen);
	if ((vnc->screen->port && vnc->screen->listenSock < 0) ||
	    (vnc->screen->ipv6port && vnc->screen->listen6Sock < 0)) {
		snprintf(err, errlen, "--vnc %s: cannot listen there (%s)",
			 spec, errno ? strerror(errno) : "address in use?");
		goto fail;
	}
	return vnc;
fail:
	vnc_server_destroy(vnc);
	return NULL;
}

void vnc_server_destroy(struct vnc_server *vnc)
{
	if (!vnc)
		return;
	if (vnc->screen) {
		rfbShutdownServer(vnc->screen, TRUE);
		free(vnc->screen->listen6Interface);
		vnc->screen->listen6Interface = NULL;
		rfbScreenCleanup(vnc->screen);
	}
	if (vnc->unix_fd >= 0) {
		close(vnc->unix_fd);
		unlink(vnc->unix_path);
	}
	free(vnc->unix_path);
	free(vnc->passwords[0]);
	free(vnc);
}

void vnc_server_resize(struct vnc_server *vnc, uint32_t *pixels, unsigned width,
		       unsigned height)
{
	rfbNewFramebuffer(vnc->screen, (char *)pixels, width, height, 8, 3, 4);
}

void vnc_server_changed(struct vnc_server *vnc, unsigned x, unsigned y,
			unsigned width, unsigned height)
{
	rfbMarkRectAsModified(vnc->screen, x, y, x + width, y + height);
}

void vnc_server_poll(struct vnc_server *vnc, long timeout_us)
{
	if (vnc->unix_fd >= 0) {
		int fd = accept4(vnc->unix_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd >= 0) {
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			rfbNewClient(vnc->screen, fd);
		}
	}
	rfbProcessEvents(vnc->screen, timeout_us);
}

unsigned vnc_server_fds(const struct vnc_server *vnc, struct pollfd *fds,
			unsigned max)
{
	rfbScreenInfoPtr s = vnc->screen;
	int listening[] = { vnc->unix_fd, s->listenSock, s->listen6Sock };
	rfbClientIteratorPtr it;
	rfbClientPtr cl;
	unsigned n = 0;

	for (unsigned i = 0; i < 3; i++)
		if (listening[i] >= 0 && n < max)
			fds[n++] = (struct pollfd){ .fd = listening[i],
						    .events = POLLIN };
	it = rfbGetClientIterator(s);
	while ((cl = rfbClientIteratorNext(it)) && n < max)
		if (cl->sock >= 0)
			fds[n++] = (struct pollfd){ .fd = cl->sock,
						    .events = POLLIN };
	rfbReleaseClientIterator(it);
	return n;
}

long vnc_server_send_delay_us(const struct vnc_server *vnc)
{
	return vnc->screen->deferUpdateTime * 1000L;
}

bool vnc_server_has_viewers(const struct vnc_server *vnc)
{
	return vnc->screen->clientHead != NULL;
}

bool vnc_server_input_seen(struct vnc_server *vnc)
{
	bool seen = vnc->input_seen;

	vnc->input_seen = false;
	return seen;
}
