/* SPDX-License-Identifier: MIT */
/*
 * The display over a VGA on a machine without KVM: screenshots read back
 * with libpng, the text dump, the VNC server read and driven by
 * LibVNCServer's own client library (framebuffer, changed rectangles,
 * keys into the i8042 in scan code sets 1 and 2, the PS/2 mouse, the
 * password), and hostile VNC clients that must be dropped while the
 * server keeps serving.  Also the keysym table against the US layout.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <png.h>
#include <rfb/rfbclient.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmm_vga_util.h"

#include "vmm/devices/vga.h"
#include "vmm/display/display.h"
#include "vmm/display/render.h"
#include "vmm/display/sdl.h"
#include "vmm/input.h"

#define RAM (32u << 20)

static struct vmm *vm;
static struct vga *vga;
static struct i8042 *kbc;
static struct display *disp;
static char dir[64];
static int port;

static const uint8_t glyph_h[16] = { 0xc6, 0xc6, 0xc6, 0xfe,
				     0xc6, 0xc6, 0xc6, 0x00 };

static void quiet(const char *format, ...)
{
	(void)format;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int p;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	p = ntohs(a.sin_port);
	close(fd);
	return p;
}

static void start_display(const char *password_file)
{
	char spec[64], err[256];
	struct display_options opt = { .vnc = spec,
				       .vnc_password_file = password_file };

	port = free_port();
	snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
	disp = display_create(vga, kbc, &opt, err, sizeof(err));
	cr_assert_not_null(disp, "%s", err);
}

static void setup(void)
{
	char err[256];

	rfbClientLog = quiet;
	rfbClientErr = quiet;
	vm = vmm_create_test(RAM);
	cr_assert_not_null(vm);
	kbc = i8042_create(vm);
	cr_assert_not_null(kbc);
	vga = vga_create(vm, 2, VGA_VRAM_DEFAULT, err, sizeof(err));
	cr_assert_not_null(vga, "%s", err);
	vga_set_text_mode(vm);
	vga_load_glyph(vm, 'H', glyph_h, 16);
	vga_dac(vm, 0x3f, 0x3f, 0x3f, 0x3f);
	vga_dac(vm, 0x01, 0x00, 0x00, 0x2a);
	strcpy(dir, "/tmp/test_vmm_display.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	display_destroy(disp);
	disp = NULL;
	vga_destroy(vga);
	i8042_destroy(kbc);
	vmm_destroy(vm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(vmm_display, .init = setup, .fini = teardown, .timeout = 60);

/* the surface as an independent renderer over the same VGA draws it */
static uint32_t *expected_surface(unsigned *w, unsigned *h)
{
	struct renderer *r = renderer_create(vga);
	struct render_rect rect;
	bool resized;
	const uint32_t *p;
	uint32_t *copy;

	cr_assert_not_null(r);
	cr_assert_eq(renderer_update(r, &resized, &rect), 0);
	p = renderer_surface(r, w, h);
	copy = malloc((size_t)*w * *h * 4);
	memcpy(copy, p, (size_t)*w * *h * 4);
	renderer_destroy(r);
	return copy;
}

static void write_hello(void)
{
	const char *text = "Hello, world";

	vga_put_char(vm, 1, 0, 0xc9, 0x07); /* box corner: U+2554 */
	for (unsigned i = 0; text[i]; i++)
		vga_put_char(vm, 1, 1 + i, text[i], 0x1f);
	vga_put_char(vm, 24, 79, 0x82, 0x07); /* e acute, last cell */
}

Test(vmm_display, screenshot_png_and_text)
{
	char png_path[128], txt_path[128], err[256], *text = NULL;
	png_image image = { .version = PNG_IMAGE_VERSION };
	unsigned w, h;
	uint32_t *want;
	uint8_t *rgb;
	FILE *f;
	char line[512];

	start_display(NULL);
	write_hello();
	snprintf(png_path, sizeof(png_path), "%s/screen.png", dir);
	snprintf(txt_path, sizeof(txt_path), "%s/screen.txt", dir);
	cr_assert_eq(display_screenshot(disp, png_path, err, sizeof(err)), 0,
		     "%s", err);
	want = expected_surface(&w, &h);
	cr_assert_eq(w, 720);
	cr_assert_eq(h, 400);

	/* libpng reads it back pixel for pixel */
	cr_assert(png_image_begin_read_from_file(&image, png_path), "%s",
		  image.message);
	cr_assert_eq(image.width, 720);
	cr_assert_eq(image.height, 400);
	image.format = PNG_FORMAT_RGB;
	rgb = malloc(PNG_IMAGE_SIZE(image));
	cr_assert(png_image_finish_read(&image, NULL, rgb, 0, NULL), "%s",
		  image.message);
	for (unsigned i = 0; i < w * h; i++) {
		uint32_t p = rgb[3 * i] | rgb[3 * i + 1] << 8 |
			     rgb[3 * i + 2] << 16;

		cr_assert_eq(p, want[i], "pixel %u: %06x, want %06x", i, p,
			     want[i]);
	}
	/* the H at row 1, column 1: white dots on blue */
	cr_assert_eq(want[16 * 720 + 9], 0xffffff);
	cr_assert_eq(want[16 * 720 + 9 + 2], 0xa80000);
	free(rgb);
	free(want);

	/* the characters, CP437 mapped */
	f = fopen(txt_path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_str_eq(line, "\n");
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_str_eq(line, "\xe2\x95\x94Hello, world\n");
	for (unsigned i = 2; i < 25; i++)
		cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_eq(strlen(line), 80 + 1 + 1, "%s", line); /* é is 2 bytes */
	cr_assert_not_null(strstr(line, "\xc3\xa9\n"));
	cr_assert_null(fgets(line, sizeof(line), f));
	fclose(f);
	cr_assert_eq(display_text_dump(disp, &text), 0);
	cr_assert_not_null(strstr(text, "Hello, world"));
	free(text);

	/* graphics modes have no text dump */
	vga_gfx(vm, 6, 0x05);
	cr_assert_eq(display_text_dump(disp, &text), -ENOTSUP);
}

/* ---- VNC through libvncclient ------------------------------------------*/

static struct {
	unsigned updates;
	int x, y, w, h; /* last rectangle */
	unsigned long area;
} seen;

static void got_update(rfbClient *c, int x, int y, int w, int h)
{
	(void)c;
	seen.updates++;
	seen.x = x;
	seen.y = y;
	seen.w = w;
	seen.h = h;
	seen.area += (unsigned long)w * h;
}

static const char *client_password;

static char *give_password(rfbClient *c)
{
	(void)c;
	return strdup(client_password);
}

static rfbClient *connect_client(const char *password)
{
	rfbClient *c = rfbGetClient(8, 3, 4);

	c->serverHost = strdup("127.0.0.1");
	c->serverPort = port;
	c->GotFrameBufferUpdate = got_update;
	client_password = password;
	if (password)
		c->GetPassword = give_password;
	if (!rfbInitClient(c, NULL, NULL))
		return NULL; /* freed by the library */
	return c;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* serve the client's messages until cond() holds or 10 s pass */
static bool pump_until(rfbClient *c, bool (*cond)(rfbClient *))
{
	double end = now() + 10;

	while (now() < end) {
		if (cond(c))
			return true;
		if (WaitForMessage(c, 50000) > 0 && !HandleRFBServerMessage(c))
			return false;
	}
	return cond(c);
}

static uint32_t *want_frame;

static bool frame_matches(rfbClient *c)
{
	return c->width == 720 && c->height == 400 &&
	       !memcmp(c->frameBuffer, want_frame, 720 * 400 * 4);
}

static bool second_h_arrived(rfbClient *c)
{
	const uint32_t *p = (const uint32_t *)c->frameBuffer;

	return p[160 * 720 + 360] == 0xffffff && p[160 * 720 + 362] == 0xa80000;
}

static uint8_t read_output(bool *aux)
{
	double end = now() + 5;

	while (now() < end) {
		uint8_t status = inb(vm, 0x64);

		if (status & 1) {
			*aux = status & 0x20;
			return inb(vm, 0x60);
		}
		usleep(1000);
	}
	cr_assert_fail("no byte from the i8042");
	return 0;
}

static void expect_bytes(const uint8_t *want, unsigned n, bool want_aux)
{
	for (unsigned i = 0; i < n; i++) {
		bool aux;
		uint8_t b = read_output(&aux);

		cr_assert_eq(b, want[i], "byte %u: %#x, want %#x", i, b,
			     want[i]);
		cr_assert_eq(aux, want_aux);
	}
}

Test(vmm_display, vnc_framebuffer_updates_keys_and_mouse)
{
	unsigned w, h;
	rfbClient *c;

	write_hello();
	want_frame = expected_surface(&w, &h);
	start_display(NULL);
	c = connect_client(NULL);
	cr_assert_not_null(c, "libvncclient could not connect");
	cr_assert(pump_until(c, frame_matches),
		  "the viewer's frame differs from the screen");
	free(want_frame);

	/* one character more: only its cell travels.  (A second renderer
	 * would take the display's dirty bits, so only that cell is
	 * checked.) */
	memset(&seen, 0, sizeof(seen));
	vga_put_char(vm, 10, 40, 'H', 0x1f);
	cr_assert(pump_until(c, second_h_arrived));
	cr_assert_gt(seen.updates, 0);
	cr_assert_leq(seen.area, 9 * 16 * 4, "%lu pixels sent", seen.area);
	cr_assert_leq(seen.x, 40 * 9);
	cr_assert_geq(seen.x + seen.w, 41 * 9);

	/* keys: scan code set 2 (the i8042 translation off) */
	SendKeyEvent(c, XK_a, TRUE);
	SendKeyEvent(c, XK_a, FALSE);
	expect_bytes((const uint8_t[]){ 0x1c, 0xf0, 0x1c }, 3, false);
	SendKeyEvent(c, XK_Up, TRUE);
	SendKeyEvent(c, XK_Up, FALSE);
	expect_bytes((const uint8_t[]){ 0xe0, 0x75, 0xe0, 0xf0, 0x75 }, 5,
		     false);
	/* translation on (command byte bit 6): set 1 */
	outb(vm, 0x64, 0x60);
	outb(vm, 0x60, 0x45);
	SendKeyEvent(c, XK_Return, TRUE);
	SendKeyEvent(c, XK_Return, FALSE);
	SendKeyEvent(c, XK_Shift_L, TRUE);
	SendKeyEvent(c, XK_A, TRUE);
	expect_bytes((const uint8_t[]){ 0x1c, 0x9c, 0x2a, 0x1e }, 4, false);

	/* the mouse reports once the guest enables it */
	SendPointerEvent(c, 100, 100, 0);
	outb(vm, 0x64, 0xd4);
	outb(vm, 0x60, 0xf4);
	expect_bytes((const uint8_t[]){ 0xfa }, 1, true);
	SendPointerEvent(c, 105, 98, rfbButton1Mask);
	/* left button, +5 right, +2 up */
	expect_bytes((const uint8_t[]){ 0x09, 5, 2 }, 3, true);
	SendPointerEvent(c, 101, 100, rfbButton3Mask);
	expect_bytes((const uint8_t[]){ 0x3a, 0xfc, 0xfe }, 3, true);

	rfbClientCleanup(c);
}

Test(vmm_display, vnc_password)
{
	char path[128];
	FILE *f;
	rfbClient *c;

	snprintf(path, sizeof(path), "%s/password", dir);
	f = fopen(path, "w");
	fputs("s3cret\n", f);
	fclose(f);
	start_display(path);
	cr_assert_null(connect_client("wrong"));
	c = connect_client("s3cret");
	cr_assert_not_null(c);
	rfbClientCleanup(c);
}

static int raw_connect(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 10 };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* reads until the server closes; false on a 10 s timeout */
static bool closed_by_server(int fd)
{
	char buf[65536];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	return n == 0 || errno == ECONNRESET;
}

static void read_exact(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		cr_assert_gt(n, 0);
		got += n;
	}
}

Test(vmm_display, hostile_vnc_clients_are_dropped)
{
	uint8_t version[12], buf[64];
	unsigned w, h;
	rfbClient *c;
	int fd;

	write_hello();
	want_frame = expected_surface(&w, &h);
	start_display(NULL);

	/* garbage instead of a protocol version */
	fd = raw_connect();
	read_exact(fd, version, 12);
	cr_assert_eq(memcmp(version, "RFB 003.", 8), 0);
	cr_assert_eq(write(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 27);
	cr_assert(closed_by_server(fd));
	close(fd);

	/* a version that does not exist */
	fd = raw_connect();
	read_exact(fd, version, 12);
	cr_assert_eq(write(fd, "RFB 999.999\n", 12), 12);
	cr_assert(closed_by_server(fd));
	close(fd);

	/* a proper start, then a request far larger than the screen and an
	 * unknown message type */
	fd = raw_connect();
	read_exact(fd, version, 12);
	cr_assert_eq(write(fd, "RFB 003.008\n", 12), 12);
	read_exact(fd, buf, 1); /* number of security types */
	cr_assert_gt(buf[0], 0);
	read_exact(fd, buf + 1, buf[0]);
	cr_assert_eq(write(fd, "\x01", 1), 1); /* None */
	read_exact(fd, buf, 4);		       /* SecurityResult OK */
	cr_assert_eq(buf[0] | buf[1] | buf[2] | buf[3], 0);
	cr_assert_eq(write(fd, "\x01", 1), 1); /* ClientInit, shared */
	read_exact(fd, buf, 24);
	cr_assert_eq(buf[0] << 8 | buf[1], 720);
	{
		uint32_t name_len = (uint32_t)buf[20] << 24 | buf[21] << 16 |
				    buf[22] << 8 | buf[23];

		cr_assert_lt(name_len, 64);
		read_exact(fd, buf, name_len);
	}
	{
		/* FramebufferUpdateRequest, 65535 x 65535 at 60000,60000 */
		const uint8_t huge[10] = { 3,	 0,    0xea, 0x60, 0xea,
					   0x60, 0xff, 0xff, 0xff, 0xff };
		const uint8_t all[10] = { 3, 0,	   0,	 0,    0,
					  0, 0xff, 0xff, 0xff, 0xff };

		cr_assert_eq(write(fd, huge, 10), 10);
		cr_assert_eq(write(fd, all, 10), 10);
	}
	/* read part of the frame, then a message type nobody knows */
	read_exact(fd, buf, 16);
	cr_assert_eq(write(fd, "\xee\xee\xee\xee", 4), 4);
	cr_assert(closed_by_server(fd));
	close(fd);

	/* a viewer that asks for the whole screen and leaves mid-frame */
	fd = raw_connect();
	read_exact(fd, version, 12);
	cr_assert_eq(write(fd, "RFB 003.008\n", 12), 12);
	read_exact(fd, buf, 1);
	read_exact(fd, buf + 1, buf[0]);
	cr_assert_eq(write(fd, "\x01\x01", 2), 2);
	read_exact(fd, buf, 4);
	cr_assert_eq(write(fd, "\x03\x00\x00\x00\x00\x00\x02\xd0\x01\x90", 10),
		     10);
	read_exact(fd, buf, 8);
	close(fd);

	/* the server still serves a well-behaved viewer */
	c = connect_client(NULL);
	cr_assert_not_null(c);
	cr_assert(pump_until(c, frame_matches));
	free(want_frame);
	rfbClientCleanup(c);
}

/* ---- the US layout -------------------------------------------------------*/

Test(vmm_display, keysyms_of_a_us_keyboard)
{
	/* the four rows of character keys and their set 1 codes, unshifted
	 * and shifted, as printed on the keycaps */
	static const struct {
		const char *plain, *shifted;
		uint8_t first;
	} rows[] = {
		{ "1234567890-=", "!@#$%^&*()_+", 0x02 },
		{ "qwertyuiop[]", "QWERTYUIOP{}", 0x10 },
		{ "asdfghjkl;'`", "ASDFGHJKL:\"~", 0x1e },
		{ "zxcvbnm,./", "ZXCVBNM<>?", 0x2c },
	};
	unsigned keys = 0;

	for (unsigned r = 0; r < 4; r++) {
		for (unsigned i = 0; rows[r].plain[i]; i++) {
			cr_assert_eq(input_keysym_to_scancode(rows[r].plain[i]),
				     rows[r].first + i, "'%c'",
				     rows[r].plain[i]);
			cr_assert_eq(
				input_keysym_to_scancode(rows[r].shifted[i]),
				rows[r].first + i, "'%c'", rows[r].shifted[i]);
			keys++;
		}
	}
	cr_assert_eq(input_keysym_to_scancode('\\'), 0x2b);
	cr_assert_eq(input_keysym_to_scancode('|'), 0x2b);
	cr_assert_eq(input_keysym_to_scancode(' '), 0x39);
	/* every printable ASCII character has a key */
	for (uint32_t ch = 0x20; ch < 0x7f; ch++)
		cr_assert_neq(input_keysym_to_scancode(ch), 0, "%#x", ch);
	cr_assert_eq(keys, 46);
	/* function, editing, modifier and keypad keys */
	cr_assert_eq(input_keysym_to_scancode(XK_F1), 0x3b);
	cr_assert_eq(input_keysym_to_scancode(XK_F10), 0x44);
	cr_assert_eq(input_keysym_to_scancode(XK_F11), 0x57);
	cr_assert_eq(input_keysym_to_scancode(XK_F12), 0x58);
	cr_assert_eq(input_keysym_to_scancode(XK_Escape), 0x01);
	cr_assert_eq(input_keysym_to_scancode(XK_BackSpace), 0x0e);
	cr_assert_eq(input_keysym_to_scancode(XK_Tab), 0x0f);
	cr_assert_eq(input_keysym_to_scancode(XK_Return), 0x1c);
	cr_assert_eq(input_keysym_to_scancode(XK_Caps_Lock), 0x3a);
	cr_assert_eq(input_keysym_to_scancode(XK_Shift_R), 0x36);
	cr_assert_eq(input_keysym_to_scancode(XK_Control_R), 0xe01d);
	cr_assert_eq(input_keysym_to_scancode(XK_Alt_R), 0xe038);
	cr_assert_eq(input_keysym_to_scancode(XK_Delete), 0xe053);
	cr_assert_eq(input_keysym_to_scancode(XK_Page_Down), 0xe051);
	cr_assert_eq(input_keysym_to_scancode(XK_KP_Enter), 0xe01c);
	cr_assert_eq(input_keysym_to_scancode(XK_KP_Divide), 0xe035);
	cr_assert_eq(input_keysym_to_scancode(XK_KP_7), 0x47);
	cr_assert_eq(input_keysym_to_scancode(XK_KP_0), 0x52);
	cr_assert_eq(input_keysym_to_scancode(XK_Super_L), 0xe05b);
	cr_assert_eq(input_keysym_to_scancode(0x20ac), 0); /* EuroSign */
}

Test(vmm_display, set2_codes_of_every_set1_key)
{
	/* the IBM set 2 codes of keys 0x01-0x58, in set 1 order (0x55
	 * unused) */
	static const uint8_t set2[0x59] = {
		0,    0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, 0x3d, 0x3e,
		0x46, 0x45, 0x4e, 0x55, 0x66, 0x0d, 0x15, 0x1d, 0x24, 0x2d,
		0x2c, 0x35, 0x3c, 0x43, 0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14,
		0x1c, 0x1b, 0x23, 0x2b, 0x34, 0x33, 0x3b, 0x42, 0x4b, 0x4c,
		0x52, 0x0e, 0x12, 0x5d, 0x1a, 0x22, 0x21, 0x2a, 0x32, 0x31,
		0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c, 0x11, 0x29, 0x58, 0x05,
		0x06, 0x04, 0x0c, 0x03, 0x0b, 0x83, 0x0a, 0x01, 0x09, 0x77,
		0x7e, 0x6c, 0x75, 0x7d, 0x7b, 0x6b, 0x73, 0x74, 0x79, 0x69,
		0x72, 0x7a, 0x70, 0x71, 0x84, 0,    0x61, 0x78, 0x07,
	};

	for (unsigned code = 1; code < 0x59; code++) {
		if (!set2[code]) {
			cr_assert_neq(i8042_key_event(kbc, code, true), 0);
			continue;
		}
		cr_assert_eq(i8042_key_event(kbc, code, true), 0);
		cr_assert_eq(i8042_key_event(kbc, code, false), 0);
		expect_bytes((const uint8_t[]){ set2[code], 0xf0, set2[code] },
			     3, false);
	}
}

/* both viewers read all the time, as real ones do: the server drops a
 * viewer that leaves its socket full for seconds */
static bool pump_both_until(rfbClient *a, rfbClient *b,
			    bool (*cond)(rfbClient *))
{
	double end = now() + 10;

	while (now() < end) {
		if (cond(a) && cond(b))
			return true;
		if (WaitForMessage(a, 20000) > 0 && !HandleRFBServerMessage(a))
			return false;
		if (WaitForMessage(b, 20000) > 0 && !HandleRFBServerMessage(b))
			return false;
	}
	return cond(a) && cond(b);
}

Test(vmm_display, two_viewers_and_a_unix_socket)
{
	char spec[160], err[256], sock[128];
	struct display_options opt = { .vnc = spec };
	unsigned w, h;
	rfbClient *a, *b;

	write_hello();
	want_frame = expected_surface(&w, &h);
	snprintf(sock, sizeof(sock), "%s/vnc.sock", dir);
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	disp = display_create(vga, kbc, &opt, err, sizeof(err));
	cr_assert_not_null(disp, "%s", err);
	a = rfbGetClient(8, 3, 4);
	a->serverHost = strdup(sock);
	cr_assert(rfbInitClient(a, NULL, NULL), "first viewer on %s", sock);
	b = rfbGetClient(8, 3, 4);
	b->serverHost = strdup(sock);
	cr_assert(rfbInitClient(b, NULL, NULL), "second viewer");
	cr_assert(pump_both_until(a, b, frame_matches));
	/* a change reaches both */
	vga_put_char(vm, 10, 40, 'H', 0x1f);
	cr_assert(pump_both_until(a, b, second_h_arrived));
	free(want_frame);
	rfbClientCleanup(a);
	rfbClientCleanup(b);
}

Test(vmm_display, vnc_addresses)
{
	static const char *bad[] = { "nowhere",	       "127.0.0.1",
				     "1.2.3.4.5:5900", "[::1",
				     ":70000",	       "127.0.0.1:0",
				     "localhost:99999" };
	char err[256];

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct display_options opt = { .vnc = bad[i] };

		cr_assert_null(display_create(vga, kbc, &opt, err, sizeof(err)),
			       "%s accepted", bad[i]);
		cr_assert_not_null(strstr(err, "--vnc"), "%s: %s", bad[i], err);
	}
	/* display 99 listens on loopback port 5999 */
	{
		struct display_options opt = { .vnc = ":99" };
		rfbClient *c;

		disp = display_create(vga, kbc, &opt, err, sizeof(err));
		if (!disp) {
			/* someone else has the port: the message says so */
			cr_assert_not_null(strstr(err, "cannot listen"), "%s",
					   err);
			return;
		}
		port = 5999;
		c = connect_client(NULL);
		cr_assert_not_null(c);
		rfbClientCleanup(c);
	}
}

/* ---- the SDL window, on a virtual X server (Xvfb) ----------------------*/

static pid_t xvfb_pid;
static int window_closes;

static const char *count_close(void *opaque)
{
	(void)opaque;
	__atomic_add_fetch(&window_closes, 1, __ATOMIC_ACQ_REL);
	return "closed by the test";
}

static void stop_xvfb(void);

/* Starts Xvfb on a free display (it names the display on -displayfd). */
static bool start_xvfb_once(void)
{
	int fds[2];
	char number[16] = "", display[24];
	ssize_t n;

	if (access("/usr/bin/Xvfb", X_OK) || pipe(fds))
		return false;
	xvfb_pid = fork();
	if (xvfb_pid == 0) {
		char fd[16];

		close(fds[0]);
		snprintf(fd, sizeof(fd), "%d", fds[1]);
		if (!freopen("/dev/null", "w", stderr))
			_exit(127);
		execl("/usr/bin/Xvfb", "Xvfb", "-displayfd", fd, "-screen", "0",
		      "1024x768x24", "-nolisten", "tcp", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	n = read(fds[0], number, sizeof(number) - 1);
	close(fds[0]);
	if (n <= 0)
		return false;
	number[strcspn(number, "\n")] = '\0';
	snprintf(display, sizeof(display), ":%s", number);
	setenv("DISPLAY", display, 1);
	setenv("SDL_VIDEODRIVER", "x11", 1);
	/* it names a display it then may not keep (another server's socket
	 * there): ready when a client gets an answer */
	for (int i = 0; i < 50; i++) {
		if (system("xdotool getdisplaygeometry >/dev/null 2>&1") == 0)
			return true;
		usleep(100000);
	}
	return false;
}

static bool start_xvfb(void)
{
	for (int i = 0; i < 3; i++) {
		if (start_xvfb_once())
			return true;
		stop_xvfb();
	}
	return false;
}

static void stop_xvfb(void)
{
	/* the window goes before its X server */
	display_destroy(disp);
	disp = NULL;
	if (xvfb_pid > 0) {
		kill(xvfb_pid, SIGTERM);
		waitpid(xvfb_pid, NULL, 0);
		xvfb_pid = 0;
	}
}

/* Runs a shell command; its first output line in out. */
static int run_line(const char *cmd, char *out, size_t len)
{
	FILE *p = popen(cmd, "r");

	out[0] = '\0';
	if (!p)
		return -1;
	if (!fgets(out, (int)len, p))
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return pclose(p);
}

/* The window as the X server shows it (xwd, converted by ImageMagick)
 * against the renderer's surface: how many pixels differ (-1: no
 * picture of the right size). */
static long window_differs(const char *window, const uint32_t *want, unsigned w,
			   unsigned h)
{
	char cmd[512], out[64], path[128];
	png_image image = { .version = PNG_IMAGE_VERSION };
	uint8_t *rgb;
	long differ = 0;

	snprintf(path, sizeof(path), "%s/window.png", dir);
	snprintf(cmd, sizeof(cmd),
		 "timeout 20 xwd -silent -id %s | timeout 20 convert xwd:- "
		 "png:%s 2>&1",
		 window, path);
	if (run_line(cmd, out, sizeof(out)) ||
	    !png_image_begin_read_from_file(&image, path))
		return -1;
	if (image.width != w || image.height != h) {
		png_image_free(&image);
		return -1;
	}
	image.format = PNG_FORMAT_RGB;
	rgb = malloc(PNG_IMAGE_SIZE(image));
	cr_assert(png_image_finish_read(&image, NULL, rgb, 0, NULL));
	for (unsigned i = 0; i < w * h; i++)
		differ += (uint32_t)(rgb[3 * i] | rgb[3 * i + 1] << 8 |
				     rgb[3 * i + 2] << 16) != want[i];
	free(rgb);
	return differ;
}

Test(vmm_display, sdl_window_shows_the_screen_and_takes_input,
     .fini = stop_xvfb)
{
	struct display_options opt = { .sdl = true,
				       .title = "imgvm: sdl-test",
				       .on_close = count_close };
	char err[256], window[64], cmd[1024], out[256];
	unsigned w, h;
	uint32_t *want;
	long differ = -1;

	window[0] = '\0';
	if (!sdl_window_available())
		cr_skip_test("imgvm was built without SDL2 (libsdl2-dev)");
	if (access("/usr/bin/xdotool", X_OK) || access("/usr/bin/xwd", X_OK) ||
	    access("/usr/bin/convert", X_OK))
		cr_skip_test("xdotool, xwd or ImageMagick's convert missing "
			     "(scripts/deps.sh installs them)");
	if (!start_xvfb())
		cr_skip_test("Xvfb does not start (package xvfb)");
	write_hello();
	want = expected_surface(&w, &h);
	disp = display_create(vga, kbc, &opt, err, sizeof(err));
	cr_assert_not_null(disp, "%s (DISPLAY=%s)", err, getenv("DISPLAY"));

	/* the window by its title: the VM's name */
	for (int i = 0; i < 100 && !window[0]; i++) {
		run_line("xdotool search --name '^imgvm: sdl-test$'", window,
			 sizeof(window));
		usleep(50000);
	}
	cr_assert(window[0], "no window titled 'imgvm: sdl-test'");
	for (int i = 0; i < 50 && differ != 0; i++) {
		differ = window_differs(window, want, w, h);
		usleep(100000);
	}
	cr_assert_eq(differ, 0,
		     "the window differs from the screen in %ld "
		     "pixels",
		     differ);
	/* a change shows up */
	vga_put_char(vm, 10, 40, 'H', 0x1f);
	free(want);
	want = expected_surface(&w, &h);
	for (int i = 0; i < 50 && differ != 0; i++) {
		usleep(100000);
		differ = window_differs(window, want, w, h);
	}
	cr_assert_eq(differ, 0, "after a change: %ld pixels differ", differ);
	free(want);

	/* keys typed on the host's keyboard: scan code set 2 */
	snprintf(cmd, sizeof(cmd),
		 "xdotool windowfocus --sync %s key a key Up 2>&1", window);
	cr_assert_eq(run_line(cmd, out, sizeof(out)), 0, "%s", out);
	expect_bytes((const uint8_t[]){ 0x1c, 0xf0, 0x1c, 0xe0, 0x75, 0xe0,
					0xf0, 0x75 },
		     8, false);

	/* the mouse, once the guest enables it: a click */
	outb(vm, 0x64, 0xd4);
	outb(vm, 0x60, 0xf4);
	expect_bytes((const uint8_t[]){ 0xfa }, 1, true);
	snprintf(cmd, sizeof(cmd),
		 "xdotool mousemove --window %s 100 100 sleep 0.3 2>&1",
		 window);
	cr_assert_eq(run_line(cmd, out, sizeof(out)), 0, "%s", out);
	/* the way into the window moved the mouse too: drop that */
	for (int quiet = 0; quiet < 300;) {
		if (inb(vm, 0x64) & 1) {
			inb(vm, 0x60);
			quiet = 0;
		} else {
			usleep(1000);
			quiet++;
		}
	}
	snprintf(cmd, sizeof(cmd),
		 "xdotool mousemove --window %s 110 96 click 1 2>&1", window);
	cr_assert_eq(run_line(cmd, out, sizeof(out)), 0, "%s", out);
	{
		int dx = 0, dy = 0;
		bool left_seen = false;

		/* motion packets until the button's press and release */
		for (int packets = 0; packets < 20; packets++) {
			bool aux;
			uint8_t b0 = read_output(&aux), b1, b2;

			cr_assert(aux);
			b1 = read_output(&aux);
			b2 = read_output(&aux);
			dx += (b0 & 0x10) ? (int)b1 - 256 : b1;
			dy += (b0 & 0x20) ? (int)b2 - 256 : b2;
			if (b0 & 1)
				left_seen = true;
			else if (left_seen)
				break;
		}
		cr_assert(left_seen, "no left button from the click");
		/* 10 right, 4 up (PS/2 y grows upwards) */
		cr_assert_eq(dx, 10);
		cr_assert_eq(dy, 4);
	}

	/* the window's close button: the callback (power button) */
	snprintf(cmd, sizeof(cmd),
		 "python3 - %s <<'PY'\n"
		 "import ctypes, sys\n"
		 "x = ctypes.CDLL('libX11.so.6')\n"
		 "x.XOpenDisplay.restype = ctypes.c_void_p\n"
		 "x.XInternAtom.restype = ctypes.c_ulong\n"
		 "x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, "
		 "ctypes.c_int]\n"
		 "d = x.XOpenDisplay(None)\n"
		 "w = int(sys.argv[1])\n"
		 "ev = (ctypes.c_long * 24)()\n"
		 "ev[0] = 33\n" /* ClientMessage */
		 "ev[4] = w\n"
		 "ev[5] = x.XInternAtom(d, b'WM_PROTOCOLS', 0)\n"
		 "ev[6] = 32\n"
		 "ev[7] = x.XInternAtom(d, b'WM_DELETE_WINDOW', 0)\n"
		 "x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, "
		 "ctypes.c_int, ctypes.c_long, ctypes.c_void_p]\n"
		 "x.XSendEvent(d, w, 0, 0, ev)\n"
		 "x.XFlush.argtypes = [ctypes.c_void_p]\n"
		 "x.XFlush(d)\n"
		 "PY",
		 window);
	cr_assert_eq(run_line(cmd, out, sizeof(out)), 0, "%s", out);
	for (int i = 0;
	     i < 100 && !__atomic_load_n(&window_closes, __ATOMIC_ACQUIRE); i++)
		usleep(20000);
	cr_assert_eq(window_closes, 1, "the close button did not reach imgvm");
	display_destroy(disp);
	disp = NULL;
}
