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
/* Serves viewers for up to timeout_us. */
void vnc_server_poll(struct vnc_server *vnc, long timeout_us);
bool vnc_server_has_viewers(const struct vnc_server *vnc);
/* Whether a viewer sent a key or pointer event since the last call. */
bool vnc_server_input_seen(struct vnc_server *vnc);

#endif
