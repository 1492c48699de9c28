/* SPDX-License-Identifier: MIT */
/*
 * Keyboard and pointer input into the guest, for any front end (a VNC
 * viewer, the control socket's sendkeys): keys by X11 keysym or by PC
 * scan code, a relative pointer with buttons.  The i8042 turns them into
 * what the guest configured (scan code set 2, translated to set 1 by the
 * controller when its command byte asks; PS/2 mouse packets on the aux
 * port).
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

#endif
