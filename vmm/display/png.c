// SPDX-License-Identifier: MIT
/*
 * A truecolour PNG (colour type 2, 8 bits, no interlace) from a rendered
 * surface: signature, IHDR, one IDAT holding zlib's stream of the
 * filtered lines (filter "none"), IEND.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "vmm/display/png.h"

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static int write_chunk(FILE *f, const char *type, const uint8_t *data,
		       size_t len)
{
	uint8_t head[8], tail[4];
	uLong crc;

	if (len > 0x7fffffff)
		return -EFBIG;
	put_be32(head, len);
	memcpy(head + 4, type, 4);
	crc = crc32(0, (const Bytef *)type, 4);
	if (len)
		crc = crc32(crc, data, len);
	put_be32(tail, crc);
	if (fwrite(head, 1, 8, f) != 8 ||
	    (len && fwrite(data, 1, len, f) != len) ||
	    fwrite(tail, 1, 4, f) != 4)
		return -EIO;
	return 0;
}

int png_write_rgbx(const char *path, const uint32_t *pixels, unsigned width,
		   unsigned height, char *err, size_t errlen)
{
	static const uint8_t signature[8] = { 0x89, 'P',  'N',	'G',
					      '\r', '\n', 0x1a, '\n' };
	size_t line = 1 + (size_t)width * 3;
	size_t raw_len = line * height;
	uint8_t *raw = malloc(raw_len ? raw_len : 1);
	uLongf packed_len = compressBound(raw_len);
	uint8_t *packed = malloc(packed_len);
	uint8_t ihdr[13];
	char tmp[4096];
	FILE *f = NULL;
	int ret = 0;

	if (!raw || !packed) {
		snprintf(err, errlen, "out of memory for a %ux%u screenshot",
			 width, height);
		ret = -ENOMEM;
		goto out;
	}
	for (unsigned y = 0; y < height; y++) {
		uint8_t *o = raw + y * line;
		const uint32_t *p = pixels + (size_t)y * width;

		*o++ = 0; /* filter: none */
		for (unsigned x = 0; x < width; x++) {
			*o++ = p[x];
			*o++ = p[x] >> 8;
			*o++ = p[x] >> 16;
		}
	}
	if (compress2(packed, &packed_len, raw, raw_len, 6) != Z_OK) {
		snprintf(err, errlen, "zlib could not compress the screenshot");
		ret = -EIO;
		goto out;
	}
	put_be32(ihdr, width);
	put_be32(ihdr + 4, height);
	ihdr[8] = 8; /* bit depth */
	ihdr[9] = 2; /* truecolour */
	ihdr[10] = ihdr[11] = ihdr[12] = 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "wbe");
	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (fwrite(signature, 1, 8, f) != 8 ||
	    write_chunk(f, "IHDR", ihdr, sizeof(ihdr)) ||
	    write_chunk(f, "IDAT", packed, packed_len) ||
	    write_chunk(f, "IEND", NULL, 0)) {
		ret = -EIO;
		snprintf(err, errlen, "%s: write failed", tmp);
	}
	if (fclose(f) && !ret) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
	}
	if (!ret && rename(tmp, path)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	}
	if (ret)
		unlink(tmp);
out:
	free(raw);
	free(packed);
	return ret;
}
