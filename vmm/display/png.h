/* SPDX-License-Identifier: MIT */
/* PNG files of a rendered surface: zlib does the compressing and the
 * checksums; this is only the chunk framing (PNG specification, 2nd ed.,
 * sections 5 and 11). */
#ifndef IMGVM_DISPLAY_PNG_H
#define IMGVM_DISPLAY_PNG_H

#include <stddef.h>
#include <stdint.h>

/* pixels: width * height, bytes R, G, B, unused (render.h).  Writes to a
 * temporary file and renames it, so readers never see half a PNG. */
int png_write_rgbx(const char *path, const uint32_t *pixels, unsigned width,
		   unsigned height, char *err, size_t errlen);

#endif
