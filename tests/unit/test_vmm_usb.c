/* SPDX-License-Identifier: MIT */
/*
 * The UHCI controller and the USB tablet over fake guest memory: a small
 * driver here builds frame lists, queue heads and transfer descriptors as
 * Linux's uhci_hcd and SeaBIOS do, enumerates the tablet (descriptors,
 * SET_ADDRESS, SET_CONFIGURATION, HID requests), polls its interrupt
 * endpoint for pointer reports, suspends and resumes the bus; then hostile
 * schedules (link cycles, addresses outside RAM, illegal PIDs and lengths)
 * that must end the frame or halt the controller, never hang.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rfb/rfbclient.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm_vga_util.h"

#include "vmm/devices/usb.h"
#include "vmm/devices/vga.h"
#include "vmm/display/display.h"
#include "vmm/input.h"

#define RAM (16u << 20)
#define SLOT 1
#define FUNCTION 2
#define DEVFN (SLOT << 3 | FUNCTION)
#define IO 0xc000
#define USB_GSI 11 /* INTD of slot 1, PIRQ D, without a PIIX router */

#define USBCMD (IO + 0x00)
#define USBSTS (IO + 0x02)
#define USBINTR (IO + 0x04)
#define FRNUM (IO + 0x06)
#define FRBASEADD (IO + 0x08)
#define PORTSC1 (IO + 0x10)
#define PORTSC2 (IO + 0x12)

#define FRAME_LIST 0x10000u
#define ASYNC_QH 0x11000u
#define TDS 0x12000u
#define BUFFERS 0x14000u
#define INT_TD 0x15000u
#define INT_BUF 0x15100u

#define T 1u
#define Q 2u
#define VF 4u
#define ACTIVE (1u << 23)
#define IOC (1u << 24)
#define STALLED (1u << 22)
#define NAKED (1u << 19)
#define TIMEOUT (1u << 18)
#define SPD (1u << 29)
#define ERRORS3 (3u << 27)

static struct vmm *vm;
static struct uhci *uhci;
static struct usb_tablet *tablet;

static uint32_t *mem32(uint32_t gpa)
{
	return (uint32_t *)vmm_gpa_to_hva(vm, gpa, 4);
}

static uint16_t inw(uint16_t port)
{
	return pio_read(vm, port, 2);
}

static void outw(uint16_t port, uint16_t v)
{
	pio_write(vm, port, v, 2);
}

static void setup(void)
{
	char err[256];

	vm = vmm_create_test(RAM);
	cr_assert_not_null(vm);
	uhci = uhci_create_manual(vm, SLOT, FUNCTION, err, sizeof(err));
	cr_assert_not_null(uhci, "%s", err);
	tablet = usb_tablet_create();
	cr_assert_not_null(tablet);
	cr_assert_eq(uhci_attach(uhci, 0, usb_tablet_device(tablet)), 0);
	/* BAR4 at IO, I/O decoding and bus mastering on */
	pci_write32(vm, DEVFN, 0x20, IO);
	pci_write32(vm, DEVFN, 0x04, 0x5);
}

static void teardown(void)
{
	uhci_destroy(uhci);
	usb_tablet_destroy(tablet);
	vmm_destroy(vm);
}

/* Every frame entry points at the async QH, which starts empty. */
static void start_controller(void)
{
	for (unsigned i = 0; i < 1024; i++)
		*mem32(FRAME_LIST + 4 * i) = ASYNC_QH | Q;
	*mem32(ASYNC_QH) = T;
	*mem32(ASYNC_QH + 4) = T;
	pio_write(vm, FRBASEADD, FRAME_LIST, 4);
	outw(USBINTR, 0xf);
	outw(USBCMD, 0x00c1); /* RS, CF, MAXP */
	cr_assert_eq(inw(USBSTS) & 0x20, 0, "still halted");
}

static void reset_and_enable_port(void)
{
	outw(PORTSC1, 0x0200); /* reset */
	outw(PORTSC1, 0x0000);
	outw(PORTSC1, 0x0004 | 0x000a); /* enable; clear the changes */
	cr_assert_eq(inw(PORTSC1) & 0x000f, 0x0005, "PORTSC1 %04x",
		     inw(PORTSC1));
}

static void fill_td(uint32_t at, uint32_t link, uint32_t ctrl, unsigned pid,
		    unsigned address, unsigned endpoint, bool toggle,
		    unsigned len, uint32_t buffer)
{
	uint32_t maxlen = len ? len - 1 : 0x7ff;

	mem32(at)[0] = link;
	mem32(at)[1] = ctrl;
	mem32(at)[2] = pid | address << 8 | endpoint << 15 |
		       (uint32_t)toggle << 19 | maxlen << 21;
	mem32(at)[3] = buffer;
}

/* A control transfer as a driver queues it: SETUP, IN or OUT data packets
 * of 8 bytes, the status packet the other way, depth first; the QH runs
 * it in the next frame.  Returns the bytes of the data stage, -1 when a TD
 * stalled, -2 when they did not all complete. */
static int control(unsigned address, uint8_t type, uint8_t request,
		   uint16_t value, uint16_t index, uint16_t length,
		   uint8_t *data)
{
	uint8_t *setup = vmm_gpa_to_hva(vm, BUFFERS, 8);
	uint32_t td = TDS;
	unsigned ntd = 0, got = 0;
	bool in = type & 0x80;
	uint32_t base = ERRORS3 | ACTIVE;

	setup[0] = type;
	setup[1] = request;
	setup[2] = value;
	setup[3] = value >> 8;
	setup[4] = index;
	setup[5] = index >> 8;
	setup[6] = length;
	setup[7] = length >> 8;
	fill_td(td, (td + 16) | VF, base, USB_PID_SETUP, address, 0, false, 8,
		BUFFERS);
	ntd++;
	for (unsigned off = 0; off < length; off += 8, ntd++) {
		unsigned n = length - off < 8 ? length - off : 8;

		td += 16;
		fill_td(td, (td + 16) | VF, base | (in ? SPD : 0),
			in ? USB_PID_IN : USB_PID_OUT, address, 0,
			!((off / 8) & 1), n, BUFFERS + 0x100 + off);
		if (!in)
			memcpy(vmm_gpa_to_hva(vm, BUFFERS + 0x100 + off, n),
			       data + off, n);
	}
	td += 16;
	fill_td(td, T, base | IOC, in && length ? USB_PID_OUT : USB_PID_IN,
		address, 0, true, 0, 0);
	ntd++;
	*mem32(ASYNC_QH + 4) = TDS;
	uhci_advance(uhci, 1);
	for (unsigned i = 0; i < ntd; i++) {
		uint32_t ctrl = mem32(TDS + 16 * i)[1];

		if (ctrl & STALLED)
			return -1;
		if (ctrl & ACTIVE) {
			/* a short IN packet stops the queue: the driver
			 * moves it to the status TD */
			if (i && (mem32(TDS + 16 * (i - 1))[1] & 0x7ff) !=
					 ((mem32(TDS + 16 * (i - 1))[2] >> 21) &
					  0x7ff)) {
				*mem32(ASYNC_QH + 4) = td;
				uhci_advance(uhci, 1);
				if (mem32(td)[1] & ACTIVE)
					return -2;
				break;
			}
			return -2;
		}
		if (i && i < ntd - 1) {
			unsigned actual = ((ctrl & 0x7ff) + 1) & 0x7ff;

			if (in)
				memcpy(data + got,
				       vmm_gpa_to_hva(vm,
						      mem32(TDS + 16 * i)[3],
						      actual ? actual : 1),
				       actual);
			got += actual;
		}
	}
	return (int)got;
}

static const uint8_t expected_device[18] = {
	18,   1,    0x10, 0x01, 0,    0, 0, 8, 0x27,
	0x06, 0x01, 0x00, 0x00, 0x01, 1, 2, 3, 1,
};

static void enumerate(unsigned address)
{
	uint8_t buf[256];

	reset_and_enable_port();
	cr_assert_eq(
		control(0, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0100, 0, 8, buf), 8);
	cr_assert_eq(control(0, 0x00, USB_REQ_SET_ADDRESS, address, 0, 0, NULL),
		     0);
	cr_assert_eq(control(address, 0x00, USB_REQ_SET_CONFIGURATION, 1, 0, 0,
			     NULL),
		     0);
}

TestSuite(uhci, .init = setup, .fini = teardown);

Test(uhci, pci_identity)
{
	uint32_t id = pci_read32(vm, DEVFN, 0);

	cr_assert_eq(id, 0x70208086);
	cr_assert_eq(pci_read32(vm, DEVFN, 8) >> 8, 0x0c0300);
	cr_assert_eq((pci_read32(vm, DEVFN, 0x3c) >> 8) & 0xff, 4, "INTD");
	/* BAR4 is 32 bytes of I/O */
	pci_write32(vm, DEVFN, 0x20, 0xffffffff);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x20), 0xffffffe1);
}

Test(uhci, registers_after_reset)
{
	pci_write32(vm, DEVFN, 0x20, IO);
	cr_assert_eq(inw(USBCMD), 0);
	cr_assert_eq(inw(USBSTS), 0x20, "halted");
	cr_assert_eq(pio_read(vm, IO + 0x0c, 1), 64, "SOFMOD");
	/* port 1 has the tablet: connected, connect change, bit 7 */
	cr_assert_eq(inw(PORTSC1), 0x0093);
	cr_assert_eq(inw(PORTSC2), 0x0080, "empty port");
	/* Linux counts ports until one lacks bit 7 */
	cr_assert_eq(inw(IO + 0x14) & 0x80, 0);
	/* write-clear of the connect change */
	outw(PORTSC1, 0x0002);
	cr_assert_eq(inw(PORTSC1), 0x0091);
	/* a port with nothing on it cannot be enabled */
	outw(PORTSC2, 0x0004);
	cr_assert_eq(inw(PORTSC2) & 0x4, 0);
}

Test(uhci, frame_number_runs_only_while_running)
{
	for (unsigned i = 0; i < 1024; i++)
		*mem32(FRAME_LIST + 4 * i) = T;
	pio_write(vm, FRBASEADD, FRAME_LIST, 4);
	uhci_advance(uhci, 5);
	cr_assert_eq(inw(FRNUM), 0);
	cr_assert_eq(uhci_frames_walked(uhci), 0);
	outw(USBCMD, 1);
	uhci_advance(uhci, 10);
	cr_assert_eq(inw(FRNUM), 10);
	outw(USBCMD, 0);
	cr_assert_eq(inw(USBSTS) & 0x20, 0x20);
	uhci_advance(uhci, 10);
	cr_assert_eq(inw(FRNUM), 11, "the next frame, frozen while stopped");
	cr_assert_eq(uhci_frames_walked(uhci), 11);
	outw(FRNUM, 0x7fe);
	outw(USBCMD, 1);
	uhci_advance(uhci, 3);
	cr_assert_eq(inw(FRNUM), 1, "wraps at 2048");
}

Test(uhci, enumeration)
{
	uint8_t buf[256];
	int n;

	start_controller();
	reset_and_enable_port();
	n = control(0, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0100, 0, 18, buf);
	cr_assert_eq(n, 18);
	cr_assert_arr_eq(buf, expected_device, 18);
	cr_assert_eq(control(0, 0x00, USB_REQ_SET_ADDRESS, 5, 0, 0, NULL), 0);
	/* the old address is gone, the new one answers */
	cr_assert_eq(control(0, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0100, 0, 8,
			     buf),
		     -2);
	cr_assert(mem32(TDS)[1] & TIMEOUT, "no device at 0: timeout");
	*mem32(ASYNC_QH + 4) = T;
	n = control(5, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0200, 0, 255, buf);
	cr_assert_eq(n, 34, "configuration, interface, HID, endpoint");
	cr_assert_eq(buf[0], 9);
	cr_assert_eq(buf[1], 2);
	cr_assert_eq(buf[2] | buf[3] << 8, 34);
	cr_assert_eq(buf[7], 0xa0, "remote wakeup");
	cr_assert_eq(buf[9 + 5], 3, "HID class");
	cr_assert_eq(buf[18 + 1], 0x21, "HID descriptor");
	cr_assert_eq(buf[27 + 2], 0x81, "endpoint 1 IN");
	cr_assert_eq(buf[27 + 3], 3, "interrupt");
	{
		unsigned report_len = buf[18 + 7] | buf[18 + 8] << 8;
		uint8_t report[256];

		n = control(5, 0x81, USB_REQ_GET_DESCRIPTOR, 0x2200, 0,
			    report_len, report);
		cr_assert_eq(n, (int)report_len);
		/* Generic Desktop, Mouse, ..., X and Y 0..32767 */
		cr_assert_eq(report[0], 0x05);
		cr_assert_eq(report[1], 0x01);
		cr_assert_eq(report[3], 0x02);
		cr_assert_not_null(memmem(report, n, "\x26\xff\x7f", 3),
				   "logical maximum 32767");
	}
	n = control(5, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0302, 0x0409, 255, buf);
	cr_assert_eq(n, 2 + 2 * 10, "USB Tablet");
	cr_assert_eq(buf[2], 'U');
	cr_assert_eq(buf[2 + 2 * 4], 'T');
	/* an unknown descriptor stalls, and the pipe works afterwards */
	cr_assert_eq(control(5, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0900, 0, 8,
			     buf),
		     -1);
	cr_assert(inw(USBSTS) & 0x2, "USB error interrupt");
	outw(USBSTS, 0x3);
	cr_assert_eq(control(5, 0x00, USB_REQ_SET_CONFIGURATION, 1, 0, 0, NULL),
		     0);
	cr_assert_eq(control(5, 0x80, USB_REQ_GET_CONFIGURATION, 0, 0, 1, buf),
		     1);
	cr_assert_eq(buf[0], 1);
	cr_assert_eq(control(5, 0x21, 0x0a /* SET_IDLE */, 0, 0, 0, NULL), 0);
	cr_assert_eq(control(5, 0xa1, 0x02 /* GET_IDLE */, 0, 0, 1, buf), 1);
	cr_assert_eq(buf[0], 0);
	cr_assert_eq(control(5, 0xa1, 0x01 /* GET_REPORT */, 0x0100, 0, 6, buf),
		     6);
	cr_assert_eq(buf[0], 0);
	/* an OUT data stage (SET_REPORT) is taken and ignored */
	buf[0] = 1;
	cr_assert_eq(control(5, 0x21, 0x09, 0x0200, 0, 1, buf), 1);
	/* IOC on the status TD raised the interrupt line */
	cr_assert(inw(USBSTS) & 0x1);
	cr_assert(vm->gsi_level[USB_GSI]);
	outw(USBSTS, 0x1);
	cr_assert_not(vm->gsi_level[USB_GSI]);
}

/* The interrupt endpoint as usbhid polls it: one TD in the frame list. */
static void queue_interrupt_td(void)
{
	fill_td(INT_TD, ASYNC_QH | Q, ERRORS3 | ACTIVE | IOC | SPD, USB_PID_IN,
		7, 1, false, 8, INT_BUF);
	for (unsigned i = 0; i < 1024; i++)
		*mem32(FRAME_LIST + 4 * i) = INT_TD;
}

Test(uhci, pointer_reports)
{
	uint8_t *report = vmm_gpa_to_hva(vm, INT_BUF, 8);

	start_controller();
	enumerate(7);
	queue_interrupt_td();
	uhci_advance(uhci, 3);
	cr_assert(mem32(INT_TD)[1] & ACTIVE, "nothing to report: NAK");
	cr_assert(mem32(INT_TD)[1] & NAKED);
	usb_tablet_pointer_event(tablet, 0x1234, 0x7fff, -1,
				 INPUT_BUTTON_LEFT | INPUT_BUTTON_RIGHT);
	uhci_advance(uhci, 1);
	cr_assert_not(mem32(INT_TD)[1] & ACTIVE);
	cr_assert_eq(mem32(INT_TD)[1] & 0x7ff, 5, "6 bytes");
	cr_assert_eq(report[0], 3);
	cr_assert_eq(report[1] | report[2] << 8, 0x1234);
	cr_assert_eq(report[3] | report[4] << 8, 0x7fff);
	cr_assert_eq((int8_t)report[5], 1, "wheel away from the user");
	/* a short packet on a SPD TD: the short-packet interrupt too */
	cr_assert(inw(USBSTS) & 1);
	cr_assert(vm->gsi_level[USB_GSI]);
	outw(USBSTS, 1);

	/* a click between two polls: both reports arrive, in order */
	usb_tablet_pointer_event(tablet, 100, 200, 0, INPUT_BUTTON_LEFT);
	usb_tablet_pointer_event(tablet, 100, 200, 0, 0);
	for (unsigned i = 0; i < 2; i++) {
		mem32(INT_TD)[1] = ERRORS3 | ACTIVE | IOC | SPD;
		uhci_advance(uhci, 1);
		cr_assert_not(mem32(INT_TD)[1] & ACTIVE);
		cr_assert_eq(report[0], i == 0 ? 1 : 0);
		cr_assert_eq(report[1] | report[2] << 8, 100);
		cr_assert_eq(report[3] | report[4] << 8, 200);
		cr_assert_eq(report[5], 0, "the wheel moved once only");
	}
	mem32(INT_TD)[1] = ERRORS3 | ACTIVE | IOC | SPD;
	uhci_advance(uhci, 1);
	cr_assert(mem32(INT_TD)[1] & ACTIVE, "the queue is empty again");
}

Test(uhci, screen_scaling)
{
	cr_assert_eq(input_absolute_position(0, 720), 0);
	cr_assert_eq(input_absolute_position(719, 720), 0x7fff);
	cr_assert_eq(input_absolute_position(360, 720), 16406);
	cr_assert_eq(input_absolute_position(200, 400), 16424);
	cr_assert_eq(input_absolute_position(-5, 400), 0);
	cr_assert_eq(input_absolute_position(5000, 400), 0x7fff);
	cr_assert_eq(input_absolute_position(3, 1), 0);
}

Test(uhci, remote_wakeup_from_global_suspend)
{
	start_controller();
	enumerate(3);
	cr_assert_eq(control(3, 0x00, USB_REQ_SET_FEATURE, 1, 0, 0, NULL), 0);
	outw(USBSTS, 0x1f);
	/* selective suspend of the port, then global suspend */
	outw(PORTSC1, 0x1004);
	outw(USBCMD, 0x0040);
	outw(USBCMD, 0x0048);
	cr_assert(inw(USBSTS) & 0x20);
	{
		uint64_t walked = uhci_frames_walked(uhci);

		uhci_advance(uhci, 50);
		cr_assert_eq(uhci_frames_walked(uhci), walked,
			     "no frames in suspend");
	}
	usb_tablet_pointer_event(tablet, 1, 2, 0, 0);
	cr_assert(inw(PORTSC1) & 0x0040, "resume detect on the port");
	cr_assert(inw(USBSTS) & 0x0004, "resume detect in USBSTS");
	cr_assert(inw(USBCMD) & 0x0010, "force global resume");
	cr_assert(vm->gsi_level[USB_GSI]);
}

Test(uhci, no_wakeup_unless_enabled)
{
	start_controller();
	enumerate(3);
	outw(PORTSC1, 0x1004);
	outw(USBCMD, 0x0048);
	usb_tablet_pointer_event(tablet, 1, 2, 0, 0);
	cr_assert_eq(inw(PORTSC1) & 0x0040, 0);
	cr_assert_eq(inw(USBSTS) & 0x0004, 0);
}

Test(uhci, no_bus_master_no_schedule)
{
	start_controller();
	reset_and_enable_port();
	pci_write32(vm, DEVFN, 0x04, 0x1);
	fill_td(TDS, T, ERRORS3 | ACTIVE, USB_PID_SETUP, 0, 0, false, 8,
		BUFFERS);
	*mem32(ASYNC_QH + 4) = TDS;
	uhci_advance(uhci, 5);
	cr_assert(mem32(TDS)[1] & ACTIVE);
}

static void quiet(const char *format, ...)
{
	(void)format;
}

/* A VNC viewer (libvncclient) clicks on the 720x400 text screen: the
 * display routes the pointer to the tablet, scaled to 0..0x7fff. */
Test(uhci, vnc_pointer_reaches_the_tablet)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char spec[64], err[256];
	struct display_options opt = { .vnc = spec, .tablet = tablet };
	uint8_t *report = vmm_gpa_to_hva(vm, INT_BUF, 8);
	struct display *disp;
	struct vga *vga;
	rfbClient *c;
	bool seen = false;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	close(fd);
	snprintf(spec, sizeof(spec), "127.0.0.1:%d", ntohs(a.sin_port));
	vga = vga_create(vm, 2, VGA_VRAM_DEFAULT, err, sizeof(err));
	cr_assert_not_null(vga, "%s", err);
	vga_set_text_mode(vm);
	disp = display_create(vga, NULL, &opt, err, sizeof(err));
	cr_assert_not_null(disp, "%s", err);

	start_controller();
	enumerate(7);
	queue_interrupt_td();
	rfbClientLog = quiet;
	rfbClientErr = quiet;
	c = rfbGetClient(8, 3, 4);
	c->serverHost = strdup("127.0.0.1");
	c->serverPort = ntohs(a.sin_port);
	cr_assert(rfbInitClient(c, NULL, NULL));
	cr_assert_eq(c->width, 720);
	cr_assert_eq(c->height, 400);
	SendPointerEvent(c, 360, 200, rfbButton1Mask);
	for (unsigned i = 0; i < 1000 && !seen; i++) {
		struct timespec ms10 = { 0, 10000000 };

		nanosleep(&ms10, NULL);
		uhci_advance(uhci, 1);
		seen = !(mem32(INT_TD)[1] & ACTIVE);
	}
	cr_assert(seen, "no report within 10 s");
	cr_assert_eq(report[0], 1, "left button");
	cr_assert_eq(report[1] | report[2] << 8, 360 * 0x7fff / 719);
	cr_assert_eq(report[3] | report[4] << 8, 200 * 0x7fff / 399);
	rfbClientCleanup(c);
	display_destroy(disp);
	vga_destroy(vga);
}

/* ---- hostile schedules -------------------------------------------------*/

static void assert_halted(uint16_t error)
{
	cr_assert_eq(inw(USBSTS) & (0x20 | error), 0x20 | error, "USBSTS %04x",
		     inw(USBSTS));
	cr_assert_eq(inw(USBCMD) & 1, 0, "Run/Stop cleared");
	cr_assert(vm->gsi_level[USB_GSI], "the error interrupts");
}

Test(uhci, qh_cycle_ends_the_frame)
{
	start_controller();
	/* two QHs linked to each other, no elements: a cycle */
	*mem32(ASYNC_QH) = (ASYNC_QH + 0x40) | Q;
	*mem32(ASYNC_QH + 0x40) = ASYNC_QH | Q;
	*mem32(ASYNC_QH + 0x44) = T;
	uhci_advance(uhci, 20);
	cr_assert_eq(uhci_frames_walked(uhci), 21);
	cr_assert_eq(inw(USBSTS) & 0x38, 0, "a cycle is legal: no error");
	cr_assert(inw(USBCMD) & 1);
}

Test(uhci, td_cycle_of_completing_packets_is_bounded)
{
	start_controller();
	reset_and_enable_port();
	/* an OUT TD to endpoint 0 linked to itself depth first inside the
	 * queue: it stalls (no control transfer), the frame goes on */
	fill_td(TDS, TDS | VF, ACTIVE, USB_PID_OUT, 0, 0, false, 1280, BUFFERS);
	*mem32(ASYNC_QH + 4) = TDS;
	/* frame-level TDs linked in a ring, to a device that is not there,
	 * retried for ever (error count 0) */
	fill_td(TDS + 0x100, (TDS + 0x110), ACTIVE, USB_PID_IN, 9, 0, false, 8,
		BUFFERS);
	fill_td(TDS + 0x110, (TDS + 0x100), ACTIVE, USB_PID_IN, 9, 0, false, 8,
		BUFFERS);
	for (unsigned i = 0; i < 1024; i++)
		*mem32(FRAME_LIST + 4 * i) = TDS + 0x100;
	uhci_advance(uhci, 10);
	cr_assert(inw(USBCMD) & 1, "still running");
	cr_assert(mem32(TDS + 0x100)[1] & TIMEOUT);
	cr_assert(mem32(TDS + 0x100)[1] & ACTIVE);
}

Test(uhci, nested_queue_cycle_is_bounded)
{
	start_controller();
	/* a QH whose element is itself */
	*mem32(ASYNC_QH + 4) = ASYNC_QH | Q;
	uhci_advance(uhci, 5);
	cr_assert(inw(USBCMD) & 1);
}

Test(uhci, td_outside_ram_is_a_host_system_error)
{
	start_controller();
	*mem32(ASYNC_QH + 4) = 0xfff00000u;
	uhci_advance(uhci, 1);
	assert_halted(0x08);
	/* no more frames until the guest starts it again */
	{
		uint64_t walked = uhci_frames_walked(uhci);

		uhci_advance(uhci, 10);
		cr_assert_eq(uhci_frames_walked(uhci), walked);
	}
}

Test(uhci, qh_outside_ram_is_a_host_system_error)
{
	start_controller();
	*mem32(ASYNC_QH) = 0x7ffffff0u | Q;
	uhci_advance(uhci, 1);
	assert_halted(0x08);
}

Test(uhci, frame_list_outside_ram_is_a_host_system_error)
{
	pio_write(vm, FRBASEADD, 0xfffff000u, 4);
	outw(USBINTR, 0xf);
	outw(USBCMD, 1);
	uhci_advance(uhci, 1);
	assert_halted(0x08);
}

Test(uhci, buffer_outside_ram_is_a_host_system_error)
{
	start_controller();
	reset_and_enable_port();
	fill_td(TDS, T, ACTIVE, USB_PID_SETUP, 0, 0, false, 8, RAM - 4);
	*mem32(ASYNC_QH + 4) = TDS;
	uhci_advance(uhci, 1);
	assert_halted(0x08);
	cr_assert(mem32(TDS)[1] & ACTIVE, "the TD is left as it was");
}

Test(uhci, bad_pid_is_a_process_error)
{
	start_controller();
	fill_td(TDS, T, ACTIVE, 0xa5, 0, 0, false, 8, BUFFERS);
	*mem32(ASYNC_QH + 4) = TDS;
	uhci_advance(uhci, 1);
	assert_halted(0x10);
}

Test(uhci, huge_length_is_a_process_error)
{
	start_controller();
	fill_td(TDS, T, ACTIVE, USB_PID_IN, 0, 0, false, 0x600, BUFFERS);
	*mem32(ASYNC_QH + 4) = TDS;
	uhci_advance(uhci, 1);
	assert_halted(0x10);
}

Test(uhci, restart_after_an_error)
{
	start_controller();
	fill_td(TDS, T, ACTIVE, 0xa5, 0, 0, false, 8, BUFFERS);
	*mem32(ASYNC_QH + 4) = TDS;
	uhci_advance(uhci, 1);
	assert_halted(0x10);
	/* the driver resets the controller and starts over */
	outw(USBCMD, 0x0002);
	cr_assert_eq(inw(USBSTS), 0x20);
	cr_assert_not(vm->gsi_level[USB_GSI]);
	start_controller();
	enumerate(4);
}

Test(uhci, byte_and_dword_register_access)
{
	/* a dword write at 0 sets USBCMD and clears USBSTS bits */
	pio_write(vm, FRBASEADD, FRAME_LIST, 4);
	for (unsigned i = 0; i < 1024; i++)
		*mem32(FRAME_LIST + 4 * i) = T;
	pio_write(vm, IO, 0x001f0001, 4);
	cr_assert_eq(inw(USBCMD), 1);
	cr_assert_eq(pio_read(vm, IO, 4) & 0xffff, 1);
	cr_assert_eq(pio_read(vm, FRBASEADD, 4), FRAME_LIST);
	/* a byte write to the port's high half leaves the changes alone */
	pio_write(vm, PORTSC1 + 1, 0x00, 1);
	cr_assert_eq(inw(PORTSC1) & 0x2, 0x2);
	/* past the registers: nothing, and no crash */
	pio_write(vm, IO + 0x1e, 0xffff, 2);
	cr_assert_eq(pio_read(vm, IO + 0x1c, 4), 0);
}

Test(uhci, platform_reset)
{
	start_controller();
	enumerate(6);
	for (size_t i = 0; i < vm->reset_hook_count; i++)
		vm->reset_hooks[i].fn(vm->reset_hooks[i].opaque);
	pci_write32(vm, DEVFN, 0x20, IO);
	pci_write32(vm, DEVFN, 0x04, 0x5);
	cr_assert_eq(inw(USBCMD), 0);
	cr_assert_eq(inw(PORTSC1), 0x0093);
	/* the tablet forgot its address */
	start_controller();
	reset_and_enable_port();
	cr_assert_eq(control(0, 0x80, USB_REQ_GET_DESCRIPTOR, 0x0100, 0, 8,
			     (uint8_t[8]){ 0 }),
		     8);
}

/* The frame thread: a stopped controller walks no frames; a running one
 * keeps up with time. */
Test(uhci_thread, idle_and_running)
{
	char err[256];
	struct vmm *m = vmm_create_test(RAM);
	struct uhci *u = uhci_create(m, SLOT, FUNCTION, err, sizeof(err));
	struct timespec ms50 = { 0, 50000000 };

	cr_assert_not_null(u, "%s", err);
	vm = m;
	pci_write32(m, DEVFN, 0x20, IO);
	pci_write32(m, DEVFN, 0x04, 0x5);
	for (unsigned i = 0; i < 1024; i++)
		*mem32(FRAME_LIST + 4 * i) = T;
	pio_write(m, FRBASEADD, FRAME_LIST, 4);
	nanosleep(&ms50, NULL);
	cr_assert_eq(uhci_frames_walked(u), 0);
	outw(USBCMD, 1);
	nanosleep(&ms50, NULL);
	nanosleep(&ms50, NULL);
	/* FRNUM follows the clock; reading it walks what is due (the last
	 * 32 frames at least, however late the thread is on a busy host) */
	cr_assert_geq(inw(FRNUM), 100);
	cr_assert_geq(uhci_frames_walked(u), 32);
	outw(USBCMD, 0);
	uhci_destroy(u);
	vmm_destroy(m);
}

/* ---- the fuzzer's seeds ------------------------------------------------*/

#include "../fuzz/fuzz_uhci.c"

#include <dirent.h>

Test(fuzz_seeds, replay)
{
	const char *dir = "tests/fuzz/seeds/fuzz_uhci";
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned count = 0;

	cr_assert_not_null(d, "%s: run from the repository root", dir);
	while ((e = readdir(d))) {
		char path[512];
		uint8_t *buf;
		FILE *f;
		long size;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		f = fopen(path, "rb");
		cr_assert_not_null(f);
		fseek(f, 0, SEEK_END);
		size = ftell(f);
		rewind(f);
		buf = malloc(size ? size : 1);
		cr_assert_eq(fread(buf, 1, size, f), (size_t)size);
		fclose(f);
		cr_assert_eq(LLVMFuzzerTestOneInput(buf, size), 0, "%s", path);
		free(buf);
		count++;
	}
	closedir(d);
	cr_assert_geq(count, 5, "seeds missing");
}
