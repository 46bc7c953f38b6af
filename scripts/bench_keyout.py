"""How well ``load_stamp`` keys a stamp out of the pictures customers send: 53 made-up stamp
pictures (three stamp shapes; a clean scan, a tight crop, one cropped to the ink itself (a frame
is then the picture's border; a two-colour frame or a digit cut by the crop), a stamped sheet
photographed on a desk, turned or running off the picture, black ink on a sheet on a black desk,
a card on a table, a scan with the lid's dark edge strip (along one edge or around a corner), a
PNG with an opaque white, cream or yellow square behind the stamp, solid badges that must stay
whole, seals whose only closed ring encloses plain paper, with text or dots outside it, a seal
with a ring of dots cropped close, a solid logo in a dim noisy photo, stamps on kraft paper with
dark fibres, close-ups of a sheet with the desk showing at its edge or in a corner, phone photos
with vignetting, a hand's shadow or a blown-out corner), each scored against the alpha it was
painted with.

    python scripts/bench_keyout.py [--keep DIR]

Prints, per picture, the IoU of the kept ink (alpha >= 0.5) with the true ink and the IoU of the
stamp's box (alpha > BOX_ALPHA_THRESHOLD, what training labels), then the mean and the worst.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge import synth


def _over(canvas: np.ndarray, rgba: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = rgba.shape[:2]
    a = rgba[..., 3:4].astype(np.float32) / 255
    canvas[y : y + h, x : x + w] = np.round(canvas[y : y + h, x : x + w] * (1 - a) + rgba[..., :3] * a)
    truth = np.zeros(canvas.shape[:2], np.uint8)
    truth[y : y + h, x : x + w] = rgba[..., 3]
    return truth


def _turn(sheet: np.ndarray, W: int, H: int, angle: float) -> np.ndarray:
    """The affine map turning ``sheet`` by ``angle`` degrees about its middle, centred in W x H."""
    turn = cv2.getRotationMatrix2D((sheet.shape[1] / 2, sheet.shape[0] / 2), angle, 1.0)
    turn[:, 2] += ((W - sheet.shape[1]) / 2, (H - sheet.shape[0]) / 2)
    return turn


def _lay(photo: np.ndarray, sheet: np.ndarray, sheet_truth: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Lay ``sheet`` on ``photo`` (in place) through the affine map ``turn``; the stamp's true
    alpha moved with it."""
    H, W = photo.shape[:2]
    on = cv2.warpAffine(np.full(sheet.shape[:2], 255, np.uint8), turn, (W, H)) > 127
    photo[on] = cv2.warpAffine(sheet, turn, (W, H))[on]
    return cv2.warpAffine(sheet_truth, turn, (W, H))


def pictures(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (the picture as written to disk, the true alpha of the stamp in it)."""

    def noisy(img: np.ndarray, sigma: float = 3.0) -> np.ndarray:
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)

    def desk(h: int, w: int) -> np.ndarray:
        grain = np.sin(np.arange(w) / 7.0 + rng.normal(0, 0.3, w).cumsum() * 0.1) * 15
        img = np.array([40, 80, 130], np.float32) + grain[None, :, None] + rng.normal(0, 4, (h, w, 1))
        return np.clip(img, 0, 255).astype(np.uint8)

    variants = synth.variant_stamps(3, 300)
    shapes = {"round": synth.default_stamp(300), "rect": variants[1].rgba, "hex": variants[2].rgba}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, st in shapes.items():
        h, w = st.shape[:2]
        page = np.full((h + 120, w + 120, 3), 245, np.uint8)
        truth = _over(page, st, 60, 60)
        out[f"{kind}_scan.jpg"] = (noisy(page), truth)
        page = np.full((h + 6, w + 6, 3), 240, np.uint8)
        truth = _over(page, st, 3, 3)
        out[f"{kind}_tight.png"] = (noisy(page), truth)
        ys, xs = np.nonzero(st[..., 3] > 128)  # cropped to the ink: a frame is the picture's border
        inked = st[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        page = np.full((*inked.shape[:2], 3), 240, np.uint8)
        truth = _over(page, inked, 0, 0)
        out[f"{kind}_cropped_to_the_ink.jpg"] = (noisy(page), truth)
        sheet = np.zeros((h + 200, w + 240, 3), np.uint8)
        sheet[:] = np.array([225, 232, 236]) - 20 * np.linspace(0, 1, h + 200)[:, None, None]
        sheet_truth = _over(sheet, st, 120, 100)
        photo = desk(h + 400, w + 500)
        photo[110 : 110 + h + 200, 130 : 130 + w + 240] = sheet
        truth = np.zeros(photo.shape[:2], np.uint8)
        truth[110 : 110 + h + 200, 130 : 130 + w + 240] = sheet_truth
        out[f"{kind}_sheet_on_desk.jpg"] = (noisy(photo, 4), truth)
        page = np.full((h + 160, w + 160, 3), 248, np.uint8)
        truth = _over(page, st, 80, 80)
        page[:, :10] = 30
        page[:, 10:18] = np.linspace(30, 248, 8)[None, :, None].astype(np.uint8)
        out[f"{kind}_scan_lid_strip.png"] = (noisy(page, 2), truth)
        page[-6:, :] = 35  # and along the bottom: an L around the corner
        page[-9:-6, :] = np.linspace(200, 35, 3)[:, None, None].astype(np.uint8)
        out[f"{kind}_scan_lid_strips_around_a_corner.png"] = (noisy(page, 2), truth)
        png = np.zeros((h + 200, w + 200, 4), np.uint8)
        png[60 : h + 140, 60 : w + 140] = 255
        truth = _over(png[..., :3], st, 100, 100)
        out[f"{kind}_png_white_square.png"] = (png, truth)
    st = shapes["rect"].copy()  # black ink on a white sheet on a black desk mat
    st[..., :3] = 30
    h, w = st.shape[:2]
    photo = np.full((h + 400, w + 500, 3), 35, np.uint8)
    photo[100 : h + 300, 120 : w + 380] = 232
    truth = _over(photo, st, 250, 200)
    grain = np.random.default_rng(1).normal(0, 3, photo.shape)  # its own draws: the others' stay put
    out["black_stamp_sheet_on_black_desk.jpg"] = (np.clip(photo + grain, 0, 255).astype(np.uint8), truth)
    for kind in ("round", "rect"):
        st = shapes[kind]
        h, w = st.shape[:2]
        sheet = np.full((h + 200, w + 240, 3), 228, np.uint8)
        sheet_truth = _over(sheet, st, 120, 100)
        H, W = h + 500, w + 560
        turn = cv2.getRotationMatrix2D((sheet.shape[1] / 2, sheet.shape[0] / 2), 12, 1.0)
        turn[:, 2] += (150, 150)
        photo = desk(H, W)
        truth = _lay(photo, sheet, sheet_truth, turn)
        out[f"{kind}_sheet_turned.jpg"] = (noisy(photo, 4), truth)
        photo = desk(h + 300, w + 400)
        photo[: h + 200, 150 : 150 + w + 100] = 230
        truth = _over(photo, st, 200, 80)
        out[f"{kind}_sheet_off_the_top.jpg"] = (noisy(photo, 4), truth)
        photo = np.full((h + 400, w + 400, 3), 110, np.uint8)
        photo[100 : h + 300, 100 : w + 300] = (200, 230, 240)
        truth = _over(photo, st, 200, 200)
        out[f"{kind}_card_on_table.jpg"] = (noisy(photo), truth)
    badge = np.full((260, 460, 3), 250, np.uint8)
    cv2.rectangle(badge, (30, 30), (430, 230), (30, 30, 200), -1)
    cv2.putText(badge, "PASSED", (70, 160), cv2.FONT_HERSHEY_DUPLEX, 2.6, (250, 250, 250), 7)
    truth = np.zeros(badge.shape[:2], np.uint8)
    truth[30:231, 30:431] = 255
    truth[badge[..., 0] > 200] = 0
    out["solid_badge_scan.jpg"] = (noisy(badge), truth)
    badge = np.zeros((260, 460, 4), np.uint8)
    cv2.rectangle(badge, (30, 30), (430, 230), (30, 30, 200, 255), -1)
    cv2.putText(badge, "PASSED", (70, 160), cv2.FONT_HERSHEY_DUPLEX, 2.6, (250, 250, 250, 255), 7)
    out["solid_badge.png"] = (badge, badge[..., 3].copy())
    photo = desk(700, 800)
    photo[100:600, 150:650] = 232
    disc = np.zeros((700, 800), np.uint8)
    cv2.circle(disc, (400, 350), 150, 255, -1)
    photo[disc > 0] = (160, 60, 20)
    cv2.putText(photo, "OK", (320, 390), cv2.FONT_HERSHEY_DUPLEX, 3, (232, 232, 232), 8)
    truth = disc.copy()
    truth[(photo[..., 0] > 200) & (disc > 0)] = 0
    out["solid_disc_on_sheet_on_desk.jpg"] = (noisy(photo), truth)
    # seals whose only closed ring encloses plain paper (text or dots outside it): not a sheet
    for kind in ("arc_text", "dotted"):
        ink = np.zeros((420, 420), np.uint8)
        cv2.circle(ink, (210, 210), 110, 255, 3, cv2.LINE_AA)
        cv2.putText(ink, "07", (160, 235), cv2.FONT_HERSHEY_DUPLEX, 2.2, 255, 6, cv2.LINE_AA)
        for k in range(14 if kind == "arc_text" else 60):
            a = np.pi * (0.9 + 1.2 * k / 13) if kind == "arc_text" else 2 * np.pi * k / 60
            x, y = round(210 + 160 * np.cos(a)), round(210 + 160 * np.sin(a))
            if kind == "arc_text":
                letter = "QCDEPARTMENT"[k % 12]
                cv2.putText(ink, letter, (x - 10, y + 10), cv2.FONT_HERSHEY_DUPLEX, 1.0, 255, 2)
            else:
                cv2.circle(ink, (x, y), 5, 255, -1, cv2.LINE_AA)
        page = np.full((420, 420, 3), 243, np.uint8)
        red = np.dstack([np.full_like(ink, 40), np.full_like(ink, 40), np.full_like(ink, 190), ink])
        truth = _over(page, red, 0, 0)
        out[f"seal_{kind}_outside_its_ring.jpg"] = (noisy(page), truth)
    # kraft paper with dark fibres (the paper's own marks, not ink), for a red and a black stamp
    for kind, colour in (("red", (40, 40, 190)), ("black", (35, 35, 35))):
        st = shapes["round"].copy()
        st[..., :3] = colour
        h, w = st.shape[:2]
        page = np.empty((h + 200, w + 200, 3), np.uint8)
        page[:] = (95, 150, 190)
        for _ in range(400):
            x0, y0 = rng.integers(0, w + 200), rng.integers(0, h + 200)
            a = rng.uniform(0, np.pi)
            n = rng.uniform(5, 18)
            x1, y1 = round(x0 + n * np.cos(a)), round(y0 + n * np.sin(a))
            cv2.line(page, (int(x0), int(y0)), (x1, y1), (45, 75, 105), 1, cv2.LINE_AA)
        truth = _over(page, st, 100, 100)
        out[f"kraft_with_fibres_{kind}.jpg"] = (noisy(page), truth)
    # a seal with a ring of dots, cropped close: its dots lie near the picture's edge, and are ink
    ink = np.zeros((330, 330), np.uint8)
    cv2.circle(ink, (165, 165), 100, 255, 4, cv2.LINE_AA)
    cv2.putText(ink, "PAID", (95, 185), cv2.FONT_HERSHEY_DUPLEX, 1.6, 255, 4, cv2.LINE_AA)
    for k in range(48):
        a = 2 * np.pi * k / 48
        cv2.circle(ink, (round(165 + 150 * np.cos(a)), round(165 + 150 * np.sin(a))), 5, 255, -1, cv2.LINE_AA)
    page = np.full((330, 330, 3), 242, np.uint8)
    blue = np.dstack([np.full_like(ink, 160), np.full_like(ink, 70), np.full_like(ink, 30), ink])
    truth = _over(page, blue, 0, 0)
    out["seal_ring_of_dots_cropped_close.jpg"] = (noisy(page), truth)
    # tight crops: a two-colour stamp whose red frame is cut by the picture's left edge, and a
    # date whose first digit touches the edge (the stamp's own ink, not a scanner lid's strip)
    page = np.full((260, 480, 3), 240, np.uint8)
    cv2.rectangle(page, (-20, 20), (460, 240), (40, 40, 190), 8)
    cv2.putText(page, "12.03.2024", (40, 150), cv2.FONT_HERSHEY_DUPLEX, 2.0, (30, 30, 30), 5, cv2.LINE_AA)
    truth = np.where(np.abs(page.astype(int) - 240).sum(axis=2) > 60, 255, 0).astype(np.uint8)
    out["two_colour_stamp_frame_cut_by_the_crop.jpg"] = (noisy(page), truth)
    page = np.full((90, 470, 3), 242, np.uint8)
    cv2.putText(page, "1 MAR 2024", (-8, 68), cv2.FONT_HERSHEY_DUPLEX, 2.0, (150, 70, 30), 6, cv2.LINE_AA)
    truth = np.where(np.abs(page.astype(int) - 242).sum(axis=2) > 60, 255, 0).astype(np.uint8)
    out["date_cropped_through_its_first_digit.jpg"] = (noisy(page), truth)
    # PNGs with an opaque square of coloured paper behind the stamp, and a white one behind a badge
    for kind, paper in (("cream", (205, 240, 250)), ("yellow", (90, 225, 245))):
        st = shapes["rect"]
        h, w = st.shape[:2]
        png = np.zeros((h + 200, w + 200, 4), np.uint8)
        png[50 : h + 150, 50 : w + 150] = (*paper, 255)
        truth = _over(png[..., :3], st, 100, 100)
        out[f"rect_png_{kind}_square.png"] = (png, truth)
    png = np.zeros((340, 540, 4), np.uint8)
    png[30:310, 30:510] = 255
    cv2.rectangle(png, (70, 70), (470, 270), (30, 30, 200, 255), -1)
    cv2.putText(png, "PASSED", (110, 200), cv2.FONT_HERSHEY_DUPLEX, 2.6, (255, 255, 255, 255), 7)
    truth = np.zeros(png.shape[:2], np.uint8)
    truth[70:271, 70:471] = 255
    truth[png[..., 0] > 200] = 0
    out["solid_badge_png_white_square.png"] = (png, truth)
    # a solid logo stamp in a dim, noisy photo: its solid areas are ink, not a shade of the paper
    page = np.full((420, 700, 3), 150, np.uint8)
    green = (50, 110, 40)
    cv2.circle(page, (160, 210), 110, green, -1, cv2.LINE_AA)
    cv2.fillConvexPoly(page, np.array([[160, 120], [215, 210], [160, 300], [105, 210]]), (150, 150, 150))
    cv2.rectangle(page, (320, 100), (600, 190), green, -1)
    cv2.putText(page, "FRESH", (350, 168), cv2.FONT_HERSHEY_DUPLEX, 2.0, (150, 150, 150), 5, cv2.LINE_AA)
    cv2.putText(page, "FARM CO.", (320, 290), cv2.FONT_HERSHEY_DUPLEX, 2.0, green, 7, cv2.LINE_AA)
    truth = np.where(np.abs(page.astype(int) - 150).sum(axis=2) > 40, 255, 0).astype(np.uint8)
    grain = rng.normal(0, 9, (*page.shape[:2], 1)) + rng.normal(0, 4, page.shape)  # light and colour
    out["solid_logo_dim_noisy_photo.jpg"] = (np.clip(page + grain, 0, 255).astype(np.uint8), truth)
    # phone close-ups of a stamped sheet with the desk showing at an edge or in a corner
    st = shapes["hex"]
    h, w = st.shape[:2]
    for kind, corners in (
        ("along_the_bottom", [[0, h + 180], [w + 400, h + 150], [w + 400, h + 300], [0, h + 300]]),
        ("in_a_corner", [[w + 250, h + 300], [w + 400, h + 170], [w + 400, h + 300]]),
    ):
        photo = np.full((h + 300, w + 400, 3), 238, np.uint8)
        on = np.zeros(photo.shape[:2], np.uint8)
        cv2.fillPoly(on, [np.array(corners, np.int32)], 1)
        photo[on > 0] = desk(*photo.shape[:2])[on > 0]
        truth = _over(photo, st, 200, 120)
        out[f"sheet_close_up_desk_{kind}.jpg"] = (noisy(photo), truth)
    # phone photos of a stamped page: uneven light (vignetting, a hand's shadow, a blown-out corner)
    st = shapes["round"]
    h, w = st.shape[:2]
    gy, gx = np.mgrid[0 : h + 400, 0 : w + 400].astype(np.float32)
    gx, gy = gx / (w + 400) - 0.5, gy / (h + 400) - 0.5
    light = {
        "vignetting": 1.0 - 1.0 * (gx**2 + gy**2),
        "shadow": 1.0 - 0.3 * np.clip(1.5 - np.hypot((gx + 0.3) / 0.35, (gy + 0.35) / 0.2), 0, 1),
        "blown_out_corner": 0.9 + 0.5 * np.clip(1.0 - np.hypot(gx - 0.5, gy - 0.5) / 0.6, 0, 1),
    }
    for kind, gain in light.items():
        page = np.full((h + 400, w + 400, 3), 225, np.uint8)
        truth = _over(page, st, 200, 200)
        lit = np.clip(page * cv2.GaussianBlur(gain, (0, 0), 15)[..., None], 0, 255)
        out[f"phone_photo_{kind}.jpg"] = (noisy(lit), truth)
    # a phone photo filled by the stamped sheet: the desk shows as a frame all around it, or in
    # pieces between the corners of a turned sheet
    for kind, turned in (("round", 0), ("rect", 6)):
        st = shapes[kind]
        h, w = st.shape[:2]
        sheet = np.full((h + 360, w + 300, 3), 236, np.uint8)
        sheet_truth = _over(sheet, st, 170, (h + 360 - h) // 3)
        H, W = round(sheet.shape[0] / 0.85**0.5), round(sheet.shape[1] / 0.85**0.5)
        photo = desk(H, W)
        truth = _lay(photo, sheet, sheet_truth, _turn(sheet, W, H, turned))
        name = "sheet_fills_the_photo" + ("_turned" if turned else "")
        out[f"{kind}_{name}.jpg"] = (noisy(photo, 3), truth)
        # ... on a light grey wooden table, close to the paper's colour (the sheet keys out
        # half-opaque on the table's colour); half a pixel off, so its edge is a thin dark line
        H, W = round(sheet.shape[0] / 0.7**0.5) | 1, round(sheet.shape[1] / 0.7**0.5) | 1
        light = np.array([160, 120, 75], np.float32)  # the desk's wood, lighter: grey 200
        photo = np.clip(desk(H, W) + light, 0, 255).astype(np.uint8)
        truth = _lay(photo, sheet, sheet_truth, _turn(sheet, W, H, 0))
        out[f"{kind}_sheet_on_a_light_table.jpg"] = (noisy(photo, 3), truth)
    # ... turned, on a white table, the photo darker towards its corners (vignetting): faint
    # shade at the picture's edge is not ink
    st = shapes["round"]
    h, w = st.shape[:2]
    sheet = np.full((h + 360, w + 300, 3), 238, np.uint8)
    sheet_truth = _over(sheet, st, 200, 150)
    H, W = round(sheet.shape[0] / 0.8**0.5), round(sheet.shape[1] / 0.8**0.5) + 200
    photo = np.full((H, W, 3), 222, np.float32)
    truth = _lay(photo, sheet, sheet_truth, _turn(sheet, W, H, -6))
    gy, gx = np.mgrid[0:H, 0:W].astype(np.float32)
    photo *= (1.0 - 0.35 * (((gx - W / 2) / (W / 2)) ** 2 + ((gy - H / 2) / (H / 2)) ** 2) / 2)[..., None]
    out["round_sheet_on_a_white_table_vignetting.jpg"] = (noisy(photo, 2), truth)
    # a stamped form on a desk: lines of printed grey text above and below the seal
    st = shapes["round"]
    h, w = st.shape[:2]
    form = np.full((h + 420, w + 200, 3), 240, np.uint8)
    for i, row in enumerate([*range(60, 170, 26), *range(h + 250, h + 360, 26)]):
        words = ["Invoice 4471", "Total due EUR", "Delivery note", "Signed", "Date 12.03"]
        text = " ".join(words[(i + j) % 5] for j in range(2))
        cv2.putText(form, text, (50, row), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (70, 70, 70), 2, cv2.LINE_AA)
    form_truth = _over(form, st, 100, 210)
    photo = desk(form.shape[0] + 240, form.shape[1] + 300)
    photo[120 : 120 + form.shape[0], 150 : 150 + form.shape[1]] = form
    truth = np.zeros(photo.shape[:2], np.uint8)
    truth[120 : 120 + form.shape[0], 150 : 150 + form.shape[1]] = form_truth
    out["round_stamped_form_on_desk.jpg"] = (noisy(photo, 3), truth)
    return out


def stamp_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha > synth.BOX_ALPHA_THRESHOLD * 255)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="key-out quality of load_stamp on made-up stamp pictures")
    parser.add_argument(
        "--keep", type=Path, default=None, help="write the pictures here (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ink_ious, box_ious = [], []
        for name, (picture, truth) in pictures(np.random.default_rng(0)).items():
            path = folder / name
            cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix == ".jpg" else [])
            alpha = synth.load_stamp(path).rgba[..., 3]
            kept, ink = alpha >= 128, truth >= 128
            ink_ious.append((kept & ink).sum() / (kept | ink).sum())
            box_ious.append(box_iou(stamp_box(alpha), stamp_box(truth)))
            print(f"{name:34s} ink IoU {ink_ious[-1]:.3f}  box IoU {box_ious[-1]:.3f}")
    print(
        f"{len(box_ious)} pictures: ink IoU mean {np.mean(ink_ious):.3f} (worst {min(ink_ious):.3f}), "
        f"box IoU mean {np.mean(box_ious):.3f} (worst {min(box_ious):.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
