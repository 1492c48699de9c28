/* SPDX-License-Identifier: MIT */
/*
 * A window on the host's desktop through SDL2 (--display sdl): the guest's
 * screen scaled to the window, the host's keyboard and mouse into the
 * guest.  Built when SDL2 is found; otherwise every call reports that.
 * Created and used by the display thread only (SDL wants one thread).
 */
#ifndef IMGVM_DISPLAY_SDL_H
#define IMGVM_DISPLAY_SDL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct i8042;
struct sdl_window;
struct usb_tablet;

/* Whether this imgvm was built with SDL2. */
bool sdl_window_available(void);

/* Keys go to kbc, the mouse to tablet (absolute), else to kbc's PS/2
 * mouse.  on_close runs (on the display thread) when the user closes the
 * window; it returns a note for the title ("" for none). */
struct sdl_window_options {
	const char *title;
	struct i8042 *kbc;
	struct usb_tablet *tablet;
	const char *(*on_close)(void *opaque);
	void *opaque;
};

struct sdl_window *sdl_window_create(const struct sdl_window_options *opt,
				     unsigned width, unsigned height, char *err,
				     size_t errlen);
void sdl_window_destroy(struct sdl_window *win);
/* The surface (bytes R, G, B, unused) changed size: the window takes it. */
void sdl_window_resize(struct sdl_window *win, const uint32_t *pixels,
		       unsigned width, unsigned height);
/* A rectangle of the surface changed: shown at once. */
void sdl_window_changed(struct sdl_window *win, const uint32_t *pixels,
			unsigned x, unsigned y, unsigned width,
			unsigned height);
/* Handles the window's events, waiting for up to timeout_us. */
void sdl_window_poll(struct sdl_window *win, long timeout_us);
/* Whether the screen can be seen (not minimised or hidden). */
bool sdl_window_visible(const struct sdl_window *win);
/* Whether a key, button or motion came in since the last call. */
bool sdl_window_input_seen(struct sdl_window *win);

#endif
