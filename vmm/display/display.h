/* SPDX-License-Identifier: MIT */
/*
 * imgvm's screen: the VGA's picture kept up to date by a refresh thread
 * when a viewer is attached, screenshots (PNG) and the text screen (UTF-8)
 * on demand.  The control socket, signals and the exit path call these.
 */
#ifndef IMGVM_DISPLAY_H
#define IMGVM_DISPLAY_H

#include <stddef.h>

struct vga;
struct i8042;
struct display;

struct display_options {
	/* "HOST:PORT", ":N" (port 5900+N on 127.0.0.1), "unix:PATH";
	 * NULL: no VNC server */
	const char *vnc;
	const char *vnc_password_file;
};

/* kbc receives the viewers' keys and pointer (may be NULL). */
struct display *display_create(struct vga *vga, struct i8042 *kbc,
			       const struct display_options *opt, char *err,
			       size_t errlen);
void display_destroy(struct display *d);

/* Writes the screen as it is now to png_path.  In a text mode also the
 * characters, as UTF-8 lines, to the same name with .txt for .png (or
 * .txt appended).  Returns 0 or -errno with a one-line message. */
int display_screenshot(struct display *d, const char *png_path, char *err,
		       size_t errlen);

/* The text screen as UTF-8 (code page 437 mapped), one line per row,
 * trailing blanks removed; *text is malloc'd.  -ENOTSUP when the screen
 * is not in a text mode. */
int display_text_dump(struct display *d, char **text);

#endif
