function scale (x, factor, shift) => (result);
function clipped (values, high) => (result);
composition limited (xs) => (result) {
    scale(x = each xs) => (scaled = result);
    clipped(values = all scaled) => (result = result);
}
