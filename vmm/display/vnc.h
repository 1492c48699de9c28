/* SPDX-License-Identifier: MIT */
/*
 * The VNC server (LibVNCServer behind this interface): serves a surface
 * the display keeps up to date and hands viewers' keys and pointer to the
 * input API.  Used from the display thread only.
 */
#ifndef IMGVM_DISPLAY_VNC_H
#define IMGVM_DISPLAY_VNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct i8042;
struct pollfd;
struct usb_tablet;
struct vnc_server;

/* spec: "HOST:PORT", ":N" (127.0.0.1, port 5900+N), "unix:PATH".  The
 * surface (bytes R, G, B, unused) is read while vnc_server_poll runs.
 * The pointer goes to tablet (scaled to its range), or as motion to kbc's
 * mouse when tablet is NULL. */
struct vnc_server *vnc_server_create(const char *spec,
				     const char *password_file,
				     struct i8042 *kbc,
				     struct usb_tablet *tablet,
				     uint32_t *pixels, unsigned width,
				     unsigned height, char *err, size_t errlen);
void vnc_server_destroy(struct vnc_server *vnc);
void vnc_server_resize(struct vnc_server *vnc, uint32_t *pixels, unsigned width,
		       unsigned height);
void vnc_server_changed(struct vnc_server *vnc, unsigned x, unsigned y,
			unsigned width, unsigned height);
/* Serves viewers for up to timeout_us (0: what is ready now). */
void vnc_server_poll(struct vnc_server *vnc, long timeout_us);
/* The descriptors vnc_server_poll would read (listening sockets and
 * viewers), for a caller that waits on them with others; at most max. */
unsigned vnc_server_fds(const struct vnc_server *vnc, struct pollfd *fds,
			unsigned max);
/* How long after vnc_server_changed the library sends the change: the
 * caller polls again then. */
long vnc_server_send_delay_us(const struct vnc_server *vnc);
bool vnc_server_has_viewers(const struct vnc_server *vnc);
/* Whether a viewer sent a key or pointer event since the last call. */
bool vnc_server_input_seen(struct vnc_server *vnc);

#endif
