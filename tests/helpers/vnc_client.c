/* SPDX-License-Identifier: MIT */
/*
 * vnc_client: a VNC viewer for tests, built on LibVNCServer's client
 * library (libvncclient), the independent side of imgvm's VNC server.
 *
 *   vnc_client ADDRESS ACTION...
 *
 * ADDRESS is HOST:PORT or the path of a UNIX socket.  Actions run in
 * order:
 *   wait:MS        serve the server's messages for MS milliseconds
 *   key:NAME       press and release a key: Return, Tab, Escape, Up, Down,
 *                  Left, Right, BackSpace, space, F1-F12, or 0xKEYSYM
 *   type:TEXT      type TEXT (\n is Return; Shift is pressed for capitals
 *                  and shifted symbols of a US keyboard)
 *   click:X,Y      move the pointer there and click the left button
 *   save:FILE.png  write the framebuffer as PNG (with libpng)
 *   match:REF.png,PERCENT,MS[,TOLERANCE]
 *                  serve until the framebuffer has REF's size and differs
 *                  from it in less than PERCENT % of the pixels (as
 *                  vnc_imgdiff counts; a pixel whose colour channels are
 *                  all within TOLERANCE, default 0, counts as equal), at
 *                  most MS milliseconds; prints "matched after S s" (from
 *                  this client's start)
 * Exit status 0, or 1 with a message when the server cannot be reached or
 * drops the connection.
 */
#include <png.h>
#include <stdbool.h>
#include <rfb/rfbclient.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int serve(rfbClient *c, unsigned ms)
{
	double end = now() + ms / 1000.0;

	do {
		int n = WaitForMessage(c, 20000);

		if (n < 0 || (n > 0 && !HandleRFBServerMessage(c))) {
			fprintf(stderr, "vnc_client: the server dropped the "
					"connection\n");
			return -1;
		}
	} while (now() < end);
	return 0;
}

static const struct {
	const char *name;
	uint32_t keysym;
} key_names[] = {
	{ "Return", XK_Return }, { "Tab", XK_Tab },
	{ "Escape", XK_Escape }, { "Up", XK_Up },
	{ "Down", XK_Down },	 { "Left", XK_Left },
	{ "Right", XK_Right },	 { "BackSpace", XK_BackSpace },
	{ "space", XK_space },	 { "Delete", XK_Delete },
};

static uint32_t keysym_of(const char *name)
{
	if (!strncmp(name, "0x", 2))
		return strtoul(name, NULL, 16);
	if (name[0] == 'F' && name[1] >= '1' && name[1] <= '9') {
		unsigned n = atoi(name + 1);

		if (n >= 1 && n <= 12)
			return XK_F1 + n - 1;
	}
	for (unsigned i = 0; i < sizeof(key_names) / sizeof(key_names[0]); i++)
		if (!strcmp(key_names[i].name, name))
			return key_names[i].keysym;
	return 0;
}

static int press(rfbClient *c, uint32_t keysym, bool shift)
{
	if (shift)
		SendKeyEvent(c, XK_Shift_L, TRUE);
	SendKeyEvent(c, keysym, TRUE);
	if (serve(c, 30))
		return -1;
	SendKeyEvent(c, keysym, FALSE);
	if (shift)
		SendKeyEvent(c, XK_Shift_L, FALSE);
	return serve(c, 30);
}

static int type_text(rfbClient *c, const char *text)
{
	static const char shifted[] = "~!@#$%^&*()_+{}|:\"<>?";

	for (const char *p = text; *p; p++) {
		char ch = *p;

		if (ch == '\\' && p[1] == 'n') {
			if (press(c, XK_Return, false))
				return -1;
			p++;
			continue;
		}
		if (press(c, (unsigned char)ch,
			  (ch >= 'A' && ch <= 'Z') || strchr(shifted, ch)))
			return -1;
	}
	return 0;
}

static int save_png(rfbClient *c, const char *path)
{
	png_image image = { .version = PNG_IMAGE_VERSION,
			    .width = c->width,
			    .height = c->height,
			    .format = PNG_FORMAT_RGBA };

	/* the frame in hand after a moment's updates */
	if (serve(c, 300))
		return -1;
	/* bytes R, G, B, X: the X byte made opaque */
	for (int i = 0; i < c->width * c->height; i++)
		c->frameBuffer[4 * i + 3] = (char)0xff;
	if (!png_image_write_to_file(&image, path, 0, c->frameBuffer, 0,
				     NULL)) {
		fprintf(stderr, "vnc_client: %s: %s\n", path, image.message);
		return -1;
	}
	return 0;
}

static double started;

/* Pixels of the framebuffer (bytes R, G, B, X) that differ from ref (RGB),
 * or -1 when the sizes differ. */
static long frame_diff(rfbClient *c, const png_image *ref,
		       const unsigned char *rgb, int tolerance)
{
	long differ = 0;

	if ((unsigned)c->width != ref->width ||
	    (unsigned)c->height != ref->height)
		return -1;
	for (long i = 0; i < (long)ref->width * ref->height; i++) {
		const unsigned char *p =
			(unsigned char *)c->frameBuffer + 4 * i;

		const unsigned char *q = rgb + 3 * i;

		differ += abs(p[0] - q[0]) > tolerance ||
			  abs(p[1] - q[1]) > tolerance ||
			  abs(p[2] - q[2]) > tolerance;
	}
	return differ;
}

static int match_png(rfbClient *c, const char *spec)
{
	char path[4096];
	double percent = 2, end;
	unsigned ms = 60000;
	int tolerance = 0;
	png_image ref = { .version = PNG_IMAGE_VERSION };
	unsigned char *rgb;
	const char *comma = strchr(spec, ',');
	size_t n = comma ? (size_t)(comma - spec) : strlen(spec);

	if (n >= sizeof(path))
		return -1;
	memcpy(path, spec, n);
	path[n] = '\0';
	if (comma)
		sscanf(comma + 1, "%lf,%u,%d", &percent, &ms, &tolerance);
	if (!png_image_begin_read_from_file(&ref, path)) {
		fprintf(stderr, "vnc_client: %s: %s\n", path, ref.message);
		return -1;
	}
	ref.format = PNG_FORMAT_RGB;
	rgb = malloc(PNG_IMAGE_SIZE(ref));
	if (!rgb || !png_image_finish_read(&ref, NULL, rgb, 0, NULL)) {
		fprintf(stderr, "vnc_client: %s: cannot read\n", path);
		free(rgb);
		return -1;
	}
	end = now() + ms / 1000.0;
	while (now() < end) {
		long differ = frame_diff(c, &ref, rgb, tolerance);

		if (differ >= 0 &&
		    differ * 100.0 < percent * ref.width * ref.height) {
			printf("matched after %.2f s (%ld of %u pixels "
			       "differ)\n",
			       now() - started, differ, ref.width * ref.height);
			free(rgb);
			return 0;
		}
		if (serve(c, 20)) {
			free(rgb);
			return -1;
		}
	}
	fprintf(stderr, "vnc_client: the screen never matched %s\n", path);
	free(rgb);
	return -1;
}

int main(int argc, char **argv)
{
	rfbClient *c;
	const char *address;
	char host[256];
	int port = 5900;

	if (argc < 2) {
		fprintf(stderr,
			"usage: vnc_client HOST:PORT|SOCKET ACTION...\n");
		return 2;
	}
	started = now();
	address = argv[1];
	snprintf(host, sizeof(host), "%s", address);
	if (address[0] != '/') {
		char *colon = strrchr(host, ':');

		if (!colon) {
			fprintf(stderr, "vnc_client: %s: HOST:PORT\n", address);
			return 2;
		}
		*colon = '\0';
		port = atoi(colon + 1);
	}
	c = rfbGetClient(8, 3, 4);
	c->serverHost = strdup(host);
	c->serverPort = port;
	if (!rfbInitClient(c, NULL, NULL)) {
		fprintf(stderr, "vnc_client: cannot connect to %s\n", address);
		return 1;
	}
	if (serve(c, 200))
		return 1;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		int ret = 0;

		if (!strncmp(a, "wait:", 5)) {
			ret = serve(c, atoi(a + 5));
		} else if (!strncmp(a, "key:", 4)) {
			uint32_t k = keysym_of(a + 4);

			if (!k) {
				fprintf(stderr, "vnc_client: unknown key %s\n",
					a + 4);
				return 2;
			}
			ret = press(c, k, false);
		} else if (!strncmp(a, "type:", 5)) {
			ret = type_text(c, a + 5);
		} else if (!strncmp(a, "click:", 6)) {
			int x = 0, y = 0;

			sscanf(a + 6, "%d,%d", &x, &y);
			SendPointerEvent(c, x, y, 0);
			SendPointerEvent(c, x, y, rfbButton1Mask);
			SendPointerEvent(c, x, y, 0);
			ret = serve(c, 50);
		} else if (!strncmp(a, "save:", 5)) {
			ret = save_png(c, a + 5);
		} else if (!strncmp(a, "match:", 6)) {
			ret = match_png(c, a + 6);
		} else {
			fprintf(stderr, "vnc_client: unknown action %s\n", a);
			return 2;
		}
		if (ret)
			return 1;
	}
	rfbClientCleanup(c);
	return 0;
}
