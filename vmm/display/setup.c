// SPDX-License-Identifier: MIT
/*
 * The screen of imgvm's PC: its options, the VGA with SeaBIOS's VGA BIOS
 * (given to the firmware as the fw_cfg file "pci1234,1111.rom", which
 * SeaBIOS runs as the option ROM of the card at its real bus address),
 * the display, and the screenshots asked for on the command line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vmm/devices/vga.h"
#include "vmm/display/display.h"
#include "vmm/display/sdl.h"
#include "vmm/machine.h"

#define VGA_BIOS "/usr/share/seabios/vgabios-stdvga.bin"
#define VGA_BIOS_MAX (256u * 1024)

const char screen_options_help[] =
	"  --display none|vnc|sdl\n"
	"                       where the VGA screen goes (default: vnc with "
	"--vnc,\n"
	"                       else none; sdl: a window on this desktop, "
	"closing it\n"
	"                       presses the power button; the serial console "
	"works\n"
	"                       either way)\n"
	"  --vnc ADDRESS        serve the screen, keyboard and mouse over "
	"VNC:\n"
	"                       HOST:PORT, :N (127.0.0.1:5900+N) or "
	"unix:PATH\n"
	"  --vnc-password-file FILE\n"
	"                       VNC viewers must give the password on FILE's "
	"first line\n"
	"  --vga std|none       the standard VGA card (Bochs VBE); present "
	"with any\n"
	"                       display or screenshot option\n"
	"  --vram SIZE          video memory, a power of two from 4M to "
	"256M (default 16M)\n"
	"  --screenshot FILE.png\n"
	"                       write the screen to FILE.png on SIGUSR2 (in "
	"text modes\n"
	"                       also the characters to FILE.txt)\n"
	"  --screenshot-on-exit FILE.png\n"
	"                       the same when the guest stops\n";

static int parse_vram(const char *text, uint32_t *out)
{
	char *end;
	unsigned long long value;

	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || end == text)
		return -EINVAL;
	if (*end == 'M' || *end == 'm' || !*end)
		value <<= 20;
	else if (*end == 'G' || *end == 'g')
		value <<= 30;
	else
		return -EINVAL;
	if (*end && end[1] && strcasecmp(end + 1, "iB") &&
	    strcasecmp(end + 1, "B"))
		return -EINVAL;
	if (value < VGA_VRAM_MIN || value > VGA_VRAM_MAX ||
	    (value & (value - 1)))
		return -EINVAL;
	*out = value;
	return 0;
}

/* The forms vnc.c listens on, checked while parsing so that a typo is
 * reported before the machine is built. */
static bool vnc_address_valid(const char *spec)
{
	const char *colon = strrchr(spec, ':');
	char host[128], *end;
	unsigned long port;
	uint8_t addr[16];

	if (!strncmp(spec, "unix:", 5))
		return spec[5] != '\0';
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		return false;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end)
		return false;
	memcpy(host, spec, colon - spec);
	host[colon - spec] = '\0';
	if (!host[0])
		return port <= 65535 - 5900;
	if (port < 1 || port > 65535)
		return false;
	if (host[0] == '[') {
		size_t len = strlen(host);

		if (len < 3 || host[len - 1] != ']')
			return false;
		host[len - 1] = '\0';
		return inet_pton(AF_INET6, host + 1, addr) == 1;
	}
	return !strcmp(host, "localhost") ||
	       inet_pton(AF_INET, host, addr) == 1;
}

int screen_option(struct screen_options *opt, const char *name,
		  const char *value)
{
	if (!strcmp(name, "vga")) {
		if (strcmp(value, "std") && strcmp(value, "none"))
			goto bad;
		opt->vga = !strcmp(value, "std");
		if (!opt->vga)
			opt->display = opt->display ? opt->display : "none";
	} else if (!strcmp(name, "vram")) {
		if (parse_vram(value, &opt->vram)) {
			fprintf(stderr,
				"imgvm: --vram must be a power of two from %u "
				"to %u MiB\n",
				VGA_VRAM_MIN >> 20, VGA_VRAM_MAX >> 20);
			return -EINVAL;
		}
		opt->vga = true;
	} else if (!strcmp(name, "display")) {
		if (strcmp(value, "none") && strcmp(value, "vnc") &&
		    strcmp(value, "sdl"))
			goto bad;
		if (!strcmp(value, "sdl") && !sdl_window_available()) {
			fprintf(stderr,
				"imgvm: --display sdl: this imgvm was built "
				"without SDL2 (install libsdl2-dev and "
				"rebuild); --vnc serves the screen instead\n");
			return -EINVAL;
		}
		opt->display = value;
	} else if (!strcmp(name, "vnc")) {
		if (!vnc_address_valid(value)) {
			fprintf(stderr,
				"imgvm: --vnc must be HOST:PORT, [IPV6]:PORT, "
				":DISPLAY or unix:PATH, not '%s'\n",
				value);
			return -EINVAL;
		}
		opt->vnc = value;
		opt->vga = true;
	} else if (!strcmp(name, "vnc-password-file")) {
		opt->vnc_password_file = value;
	} else if (!strcmp(name, "screenshot")) {
		opt->screenshot = value;
		opt->vga = true;
	} else if (!strcmp(name, "screenshot-on-exit")) {
		opt->screenshot_on_exit = value;
		opt->vga = true;
	} else {
		goto bad;
	}
	return 0;
bad:
	fprintf(stderr, "imgvm: --%s: bad value '%s' (see imgvm --help)\n",
		name, value);
	return -EINVAL;
}

int screen_options_check(struct screen_options *opt)
{
	if (!opt->vram)
		opt->vram = VGA_VRAM_DEFAULT;
	if (opt->display && !strcmp(opt->display, "vnc")) {
		if (!opt->vnc)
			opt->vnc = "127.0.0.1:5900";
		opt->vga = true;
	}
	if (opt->display && !strcmp(opt->display, "none"))
		opt->vnc = NULL;
	if (opt->display && !strcmp(opt->display, "sdl"))
		opt->vga = true;
	if (opt->vnc_password_file && !opt->vnc) {
		fprintf(stderr, "imgvm: --vnc-password-file needs --vnc\n");
		return -EINVAL;
	}
	if (!opt->vga &&
	    (opt->vnc || opt->screenshot || opt->screenshot_on_exit)) {
		fprintf(stderr, "imgvm: --vga none leaves nothing to show\n");
		return -EINVAL;
	}
	return 0;
}

static int add_vga_bios(struct fw_cfg *fc, char *err, size_t errlen)
{
	uint8_t *rom = malloc(VGA_BIOS_MAX);
	FILE *f = fopen(VGA_BIOS, "re");
	size_t n = 0;
	int ret = 0;

	if (!rom || !f) {
		snprintf(err, errlen, "%s: %s (Debian package seabios)",
			 VGA_BIOS, rom ? strerror(errno) : "out of memory");
		ret = -ENOENT;
		goto out;
	}
	n = fread(rom, 1, VGA_BIOS_MAX, f);
	if (n < 512 || rom[0] != 0x55 || rom[1] != 0xaa) {
		snprintf(err, errlen, "%s is not an option ROM", VGA_BIOS);
		ret = -EINVAL;
		goto out;
	}
	ret = fw_cfg_add_file(fc, "pci1234,1111.rom", rom, n);
	if (ret)
		snprintf(err, errlen,
			 "cannot hand the VGA BIOS to the firmware");
out:
	if (f)
		fclose(f);
	free(rom);
	return ret;
}

/* The window's close button: the ACPI power button first, so that the
 * guest shuts down and its disks are left clean, as VirtualBox offers;
 * a guest that does not listen (not in ACPI mode yet: firmware, a boot
 * loader, an installer's first screens) or a second close stops the
 * machine, as closing QEMU's window does. */
static const char *screen_window_closed(void *opaque)
{
	struct screen *s = opaque;

	if (!s->power_button_pressed && s->piix &&
	    piix_press_power_button(s->piix)) {
		s->power_button_pressed = true;
		return "power button pressed: the guest shuts down; close "
		       "again to stop it";
	}
	vmm_request_poweroff(s->vm);
	return "stopping";
}

int screen_setup(struct screen *s, const struct screen_options *opt,
		 struct vmm *vm, struct fw_cfg *fc, struct i8042 *kbc,
		 struct usb_tablet *tablet, struct piix *piix, unsigned slot,
		 char *err, size_t errlen)
{
	struct display_options dopt = {
		.vnc = opt->vnc,
		.vnc_password_file = opt->vnc_password_file,
		.tablet = tablet,
		.sdl = opt->display && !strcmp(opt->display, "sdl"),
		.on_close = screen_window_closed,
		.close_opaque = s,
	};

	memset(s, 0, sizeof(*s));
	s->vm = vm;
	s->piix = piix;
	if (opt->name)
		snprintf(s->title, sizeof(s->title), "imgvm: %s", opt->name);
	else
		snprintf(s->title, sizeof(s->title), "imgvm");
	dopt.title = s->title;
	if (!opt->vga)
		return 0;
	if (add_vga_bios(fc, err, errlen))
		return -EINVAL;
	s->vga = vga_create(vm, slot, opt->vram, err, errlen);
	if (!s->vga)
		return -EINVAL;
	s->display = display_create(s->vga, kbc, &dopt, err, errlen);
	return s->display ? 0 : -EINVAL;
}

void screen_screenshot(struct screen *s, const struct screen_options *opt)
{
	char err[512];

	if (!s->display || !opt->screenshot)
		return;
	if (display_screenshot(s->display, opt->screenshot, err, sizeof(err)))
		fprintf(stderr, "imgvm: screenshot: %s\n", err);
}

void screen_teardown(struct screen *s, const struct screen_options *opt)
{
	char err[512];

	if (s->display && opt->screenshot_on_exit &&
	    display_screenshot(s->display, opt->screenshot_on_exit, err,
			       sizeof(err)))
		fprintf(stderr, "imgvm: screenshot: %s\n", err);
	display_destroy(s->display);
	s->display = NULL;
	/* the vCPUs have stopped: nothing reaches the VGA's handlers */
	vga_destroy(s->vga);
	s->vga = NULL;
}
