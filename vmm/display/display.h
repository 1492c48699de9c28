/* SPDX-License-Identifier: MIT */
/*
 * imgvm's screen: the VGA's picture kept up to date by a refresh thread
 * when a viewer is attached, screenshots (PNG) and the text screen (UTF-8)
 * on demand.  The control socket, signals and the exit path call these.
 */
#ifndef IMGVM_DISPLAY_H
#define IMGVM_DISPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vga;
struct i8042;
struct usb_tablet;
struct display;

struct display_options {
	/* "HOST:PORT", ":N" (port 5900+N on 127.0.0.1), "unix:PATH";
	 * NULL: no VNC server */
	const char *vnc;
	const char *vnc_password_file;
	/* the viewers' pointer goes to this USB tablet, else to kbc */
	struct usb_tablet *tablet;
	/* a window on the host's desktop (SDL2), titled title; on_close
	 * runs on the display thread when the user closes it and returns a
	 * note for the title */
	bool sdl;
	const char *title;
	const char *(*on_close)(void *opaque);
	void *close_opaque;
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

/* ---- the machine's screen, from imgvm's options (setup.c) ------------*/

struct vmm;
struct fw_cfg;

struct screen_options {
	bool vga;	     /* --vga std (implied by the others) */
	uint32_t vram;	     /* --vram, bytes */
	const char *display; /* --display none|vnc|sdl */
	const char *vnc;     /* --vnc ADDRESS */
	const char *vnc_password_file;
	const char *screenshot; /* --screenshot: written on SIGUSR2 */
	const char *screenshot_on_exit;
	const char *name; /* the VM's, for the window's title (or NULL) */
};

/* One of the options above, by its long name without "--"; errors as one
 * line on stderr.  Returns 0 or -EINVAL. */
int screen_option(struct screen_options *opt, const char *name,
		  const char *value);
/* After all options: defaults and consistency.  0 or -EINVAL. */
int screen_options_check(struct screen_options *opt);
/* The options' lines for --help. */
extern const char screen_options_help[];

struct piix;

struct screen {
	struct vga *vga;
	struct display *display;
	/* the window's close button: power button, then stop */
	struct vmm *vm;
	struct piix *piix;
	bool power_button_pressed;
	char title[160];
};

/* Adds the VGA (at PCI slot) with its BIOS handed to SeaBIOS through
 * fw_cfg, and the display; nothing when no option asks for a screen.
 * Keys go to kbc, the pointer to tablet (NULL: to kbc's mouse); piix
 * (may be NULL) has the power button a window's close presses.  Errors
 * as one line in err. */
int screen_setup(struct screen *s, const struct screen_options *opt,
		 struct vmm *vm, struct fw_cfg *fc, struct i8042 *kbc,
		 struct usb_tablet *tablet, struct piix *piix, unsigned slot,
		 char *err, size_t errlen);
/* The on-demand screenshot (--screenshot), one line on stderr on error. */
void screen_screenshot(struct screen *s, const struct screen_options *opt);
/* Writes --screenshot-on-exit, stops the display, frees the VGA. */
void screen_teardown(struct screen *s, const struct screen_options *opt);

#endif
