// A media source that needs no devices: a canvas with something moving (a
// clock face, a sweeping bar, the frame count and a label) captured at
// 30 fps, and a WebAudio oscillator whose pitch steps every second.

export function testPattern({ width = 640, height = 360, label = "sorad", audio = true, video = true } = {}) {
  const tracks = [];
  const stops = [];
  if (video) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const hue = [...label].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 360, 200);
    let frame = 0;
    const draw = () => {
      frame++;
      const t = frame / 30;
      ctx.fillStyle = `hsl(${hue} 45% 22%)`;
      ctx.fillRect(0, 0, width, height);
      const bar = (frame * 4) % width;
      ctx.fillStyle = `hsl(${(hue + 180) % 360} 70% 60%)`;
      ctx.fillRect(bar, 0, width / 16, height);
      const r = Math.min(width, height) / 4;
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = Math.max(2, r / 20);
      ctx.beginPath();
      ctx.arc(width / 2, height / 2, r, 0, 2 * Math.PI);
      ctx.moveTo(width / 2, height / 2);
      ctx.lineTo(width / 2 + r * Math.sin(t), height / 2 - r * Math.cos(t));
      ctx.stroke();
      ctx.fillStyle = "#fff";
      ctx.font = `${Math.round(height / 12)}px sans-serif`;
      ctx.fillText(label, 16, height / 8);
      ctx.fillText(`frame ${frame}`, 16, height - 16);
    };
    draw();
    const timer = setInterval(draw, 1000 / 30);
    stops.push(() => clearInterval(timer));
    tracks.push(...canvas.captureStream(30).getVideoTracks());
  }
  if (audio) {
    const ac = new AudioContext();
    const osc = ac.createOscillator();
    const gain = ac.createGain();
    gain.gain.value = 0.05;
    osc.frequency.value = 440;
    const dest = ac.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    let step = 0;
    const timer = setInterval(() => (osc.frequency.value = [440, 554, 659, 880][++step % 4]), 1000);
    stops.push(() => {
      clearInterval(timer);
      osc.stop();
      ac.close();
    });
    tracks.push(...dest.stream.getAudioTracks());
  }
  const stream = new MediaStream(tracks);
  const stop = () => {
    for (const s of stops) s();
    for (const t of tracks) t.stop();
  };
  return { stream, stop };
}
