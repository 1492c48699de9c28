/* SPDX-License-Identifier: MIT */
/*
 * Keyboard and pointer input into the guest, for any front end (a VNC
 * viewer, the control socket's sendkeys): keys by X11 keysym or by PC
 * scan code, a relative pointer with buttons, or an absolute one.  The
 * i8042 turns them into what the guest configured (scan code set 2,
 * translated to set 1 by the controller when its command byte asks; PS/2
 * mouse packets on the aux port); the USB tablet into HID reports.
 */
#ifndef IMGVM_INPUT_H
#define IMGVM_INPUT_H

#include <stdbool.h>
#include <stdint.h>

struct i8042;

/* Scan code set 1 make code of a key; 0xE0xx for the extended keys. */
typedef uint16_t input_scancode;

/* The key that types keysym on a US keyboard (shifted symbols map to
 * their unshifted key: the viewer sends Shift itself); 0 when none. */
input_scancode input_keysym_to_scancode(uint32_t keysym);

/* Press or release a key.  Returns 0, or -EAGAIN when the controller's
 * queue is full (the guest is not reading). */
int i8042_key_event(struct i8042 *kbc, input_scancode key, bool down);
int input_key_keysym(struct i8042 *kbc, uint32_t keysym, bool down);

#define INPUT_BUTTON_LEFT 0x1
#define INPUT_BUTTON_RIGHT 0x2
#define INPUT_BUTTON_MIDDLE 0x4

/* Pointer motion (dx right, dy down, in pixels), wheel steps (positive:
 * towards the user) and the buttons now held.  Dropped while the guest
 * has not enabled the mouse's reporting. */
int i8042_mouse_event(struct i8042 *kbc, int dx, int dy, int wheel,
		      unsigned buttons);

/* The USB tablet's range on both axes. */
#define INPUT_ABSOLUTE_MAX 0x7fff

struct usb_tablet;

/* The pointer at (x, y) in 0..INPUT_ABSOLUTE_MAX, wheel steps as above,
 * the buttons now held.  Queued for the guest's next poll. */
void usb_tablet_pointer_event(struct usb_tablet *t, unsigned x, unsigned y,
			      int wheel, unsigned buttons);

/* A screen coordinate (0..size-1) on the tablet's axis: 0 stays 0, size-1
 * becomes INPUT_ABSOLUTE_MAX, in between pos * 0x7fff / (size - 1)
 * rounded down; outside the screen it is clamped. */
static inline unsigned input_absolute_position(int pos, unsigned size)
{
	if (pos <= 0 || size < 2)
		return 0;
	if ((unsigned)pos >= size - 1)
		return INPUT_ABSOLUTE_MAX;
	return (unsigned)((uint64_t)pos * INPUT_ABSOLUTE_MAX / (size - 1));
}

#endif
