/* SPDX-License-Identifier: MIT */
/*
 * vnc_imgdiff A.png B.png [MAX-PERCENT]: compares two screenshots pixel by
 * pixel with libpng (imgvm's against QEMU's screendump of the same screen).
 * Prints "N of M pixels differ (P %)"; exit 0 when the sizes match and
 * P < MAX-PERCENT (default 2), 1 otherwise, 2 when a file is unreadable.
 */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned char *load(const char *path, png_image *image)
{
	unsigned char *rgb;

	image->version = PNG_IMAGE_VERSION;
	if (!png_image_begin_read_from_file(image, path)) {
		fprintf(stderr, "vnc_imgdiff: %s: %s\n", path, image->message);
		return NULL;
	}
	image->format = PNG_FORMAT_RGB;
	rgb = malloc(PNG_IMAGE_SIZE(*image));
	if (!rgb || !png_image_finish_read(image, NULL, rgb, 0, NULL)) {
		fprintf(stderr, "vnc_imgdiff: %s: %s\n", path, image->message);
		free(rgb);
		return NULL;
	}
	return rgb;
}

int main(int argc, char **argv)
{
	png_image a = { 0 }, b = { 0 };
	unsigned char *pa, *pb;
	double max = argc > 3 ? atof(argv[3]) : 2.0, percent;
	unsigned long differ = 0, total;

	if (argc < 3) {
		fprintf(stderr,
			"usage: vnc_imgdiff A.png B.png [MAX-PERCENT]\n");
		return 2;
	}
	pa = load(argv[1], &a);
	pb = load(argv[2], &b);
	if (!pa || !pb)
		return 2;
	if (a.width != b.width || a.height != b.height) {
		printf("sizes differ: %ux%u and %ux%u\n", a.width, a.height,
		       b.width, b.height);
		return 1;
	}
	total = (unsigned long)a.width * a.height;
	for (unsigned long i = 0; i < total; i++)
		if (pa[3 * i] != pb[3 * i] || pa[3 * i + 1] != pb[3 * i + 1] ||
		    pa[3 * i + 2] != pb[3 * i + 2])
			differ++;
	percent = 100.0 * differ / total;
	printf("%lu of %lu pixels differ (%.3f %%), %ux%u\n", differ, total,
	       percent, a.width, a.height);
	return percent < max ? 0 : 1;
}
