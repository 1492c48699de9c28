/* SPDX-License-Identifier: MIT */
/*
 * The renderer: what the VGA's scan-out registers describe, drawn into a
 * 32-bit surface (bytes R, G, B, unused: LibVNCServer's default format),
 * redrawing only the lines whose video memory changed.
 */
#ifndef IMGVM_DISPLAY_RENDER_H
#define IMGVM_DISPLAY_RENDER_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/devices/vga.h"

struct render_rect {
	unsigned x, y, width, height; /* width 0: nothing changed */
};

struct renderer;

struct renderer *renderer_create(struct vga *vga);
void renderer_destroy(struct renderer *r);

/* Brings the surface up to date.  *resized tells that the size changed
 * (the surface was reallocated and wholly drawn); changed bounds what
 * differs from the previous surface.  Returns 0 or -errno. */
int renderer_update(struct renderer *r, bool *resized,
		    struct render_rect *changed);
/* The surface: width * height pixels, rows of width pixels. */
const uint32_t *renderer_surface(const struct renderer *r, unsigned *width,
				 unsigned *height);
/* Copy of the last scan-out the surface was drawn from. */
const struct vga_scanout *renderer_scanout(const struct renderer *r);

/* The characters of the text screen as UTF-8 lines (text.c); *text is
 * malloc'd.  -ENOTSUP outside text modes. */
int render_text(struct vga *vga, char **text);

/* Surface pixel from 0x00RRGGBB */
static inline uint32_t render_pixel(uint32_t rgb)
{
	return (rgb >> 16 & 0xff) | (rgb & 0xff00) | (rgb & 0xff) << 16;
}

#endif
