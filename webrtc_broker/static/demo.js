// The demo page's script. Generated from sdk/js/demo by `make sdk`.

// demo/demo.ts
import { BrokerClient, DisconnectedError } from "/sdk/webrtc-broker.js";
var SEND_INTERVAL_MS = 33;
var HEARTBEAT_MS = 1e3;
var STALE_MS = 5e3;
var RADIUS = 14;
var params = new URLSearchParams(location.search);
var room = params.get("room") || "lobby";
var topic = `demo/${room}`;
var token = params.get("token") ?? `guest-${Math.floor(Math.random() * 1e4)}`;
var wsScheme = location.protocol === "https:" ? "wss:" : "ws:";
var coordinator = params.get("coordinator") || `${wsScheme}//${location.host}`;
var serverParam = params.get("server");
function element(id) {
  const found = document.getElementById(id);
  if (found === null) {
    throw new Error(`the page has no #${id}`);
  }
  return found;
}
var canvas = element("canvas");
var context = canvas.getContext("2d");
var avatarList = element("avatars");
var chatLog = element("chat-log");
var chatForm = element("chat-form");
var chatInput = element("chat-input");
var errorBox = element("error");
var retry = element("retry");
var panel = {
  status: element("status"),
  server: element("server"),
  alias: element("alias"),
  rtt: element("rtt"),
  rate: element("rate"),
  peers: element("peers"),
  room: element("room"),
  name: element("name")
};
var avatars = /* @__PURE__ */ new Map();
var client;
var mine;
var moved = false;
var lastSent = 0;
function colorOf(alias) {
  const hue = alias * 137.508 % 360;
  const [s, l] = [0.65, 0.5];
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    const a = s * Math.min(l, 1 - l);
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return `rgb(${f(0)}, ${f(8)}, ${f(4)})`;
}
function showError(error) {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  errorBox.textContent = text;
  errorBox.hidden = false;
  retry.hidden = false;
  panel.status.textContent = "error";
  document.body.dataset.state = "error";
}
function send(body, reliable) {
  if (client === void 0 || client.closed) {
    return;
  }
  try {
    client.publishIdentity(topic, JSON.stringify(body), { reliable });
  } catch (error) {
    if (!(error instanceof DisconnectedError)) {
      throw error;
    }
  }
}
function place(alias, name, x, y) {
  let avatar = avatars.get(alias);
  if (avatar === void 0) {
    const item = document.createElement("li");
    const color = colorOf(alias);
    item.dataset.alias = String(alias);
    item.dataset.color = color;
    item.style.setProperty("--color", color);
    avatar = { alias, name, x, y, seen: 0, color, item };
    avatars.set(alias, avatar);
    avatarList.append(item);
  }
  avatar.x = x;
  avatar.y = y;
  avatar.seen = performance.now();
  avatar.item.dataset.x = x.toFixed(4);
  avatar.item.dataset.y = y.toFixed(4);
  avatar.item.textContent = `${name} (${Math.round(x * 100)}%, ${Math.round(y * 100)}%)`;
  panel.peers.textContent = String(avatars.size);
}
function forget(alias) {
  avatars.get(alias)?.item.remove();
  avatars.delete(alias);
  panel.peers.textContent = String(avatars.size);
}
function draw() {
  const now = performance.now();
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  for (const avatar of avatars.values()) {
    if (now - avatar.seen > STALE_MS) {
      forget(avatar.alias);
      continue;
    }
    const x = avatar.x * width;
    const y = avatar.y * height;
    context.fillStyle = avatar.color;
    context.beginPath();
    context.arc(x, y, RADIUS, 0, 2 * Math.PI);
    context.fill();
    context.fillStyle = "#222";
    context.font = "12px sans-serif";
    context.fillText(avatar.name, x + RADIUS + 4, y + 4);
  }
  if (mine !== void 0 && client !== void 0) {
    context.strokeStyle = colorOf(client.alias);
    context.lineWidth = 3;
    context.beginPath();
    context.arc(mine.x * width, mine.y * height, RADIUS, 0, 2 * Math.PI);
    context.stroke();
  }
  requestAnimationFrame(draw);
}
canvas.addEventListener("pointermove", (event) => {
  const box = canvas.getBoundingClientRect();
  mine = {
    x: Math.min(1, Math.max(0, (event.clientX - box.left) / box.width)),
    y: Math.min(1, Math.max(0, (event.clientY - box.top) / box.height))
  };
  moved = true;
});
setInterval(() => {
  const now = performance.now();
  if (mine !== void 0 && (moved || now - lastSent > HEARTBEAT_MS)) {
    send({ k: "pos", x: mine.x, y: mine.y }, false);
    moved = false;
    lastSent = now;
  }
}, SEND_INTERVAL_MS);
function addChatLine(who, text, self) {
  const line = document.createElement("li");
  const name = document.createElement("b");
  name.textContent = `${who}: `;
  line.append(name, text);
  line.classList.toggle("self", self);
  chatLog.append(line);
  chatLog.scrollTop = chatLog.scrollHeight;
}
chatForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = chatInput.value.trim();
  if (text === "" || client === void 0 || client.closed) {
    return;
  }
  send({ k: "chat", text }, true);
  addChatLine(token, text, true);
  chatInput.value = "";
});
function onMessage(message) {
  let body;
  try {
    body = JSON.parse(message.text);
  } catch {
    return;
  }
  const name = message.identityText ?? String(message.sender);
  if (body.k === "pos" && Number.isFinite(body.x) && Number.isFinite(body.y)) {
    place(message.sender, name, body.x, body.y);
  } else if (body.k === "chat" && typeof body.text === "string") {
    addChatLine(name, body.text, false);
  } else if (body.k === "bye") {
    forget(message.sender);
  }
}
function showSession(session) {
  panel.server.textContent = String(session.serverAlias);
  panel.alias.textContent = String(session.alias);
  panel.status.textContent = "connected";
  document.body.dataset.state = "connected";
  document.body.dataset.alias = String(session.alias);
  document.body.dataset.server = String(session.serverAlias);
}
async function connect() {
  errorBox.hidden = true;
  retry.hidden = true;
  panel.status.textContent = "connecting";
  document.body.dataset.state = "connecting";
  try {
    const options = serverParam ? { server: Number(serverParam) } : {};
    const session = await BrokerClient.connect(coordinator, token, options);
    client = session;
    session.on("message", onMessage);
    session.on("close", (reason) => {
      if (client === session) {
        showError(new Error(`disconnected: ${reason}`));
      }
    });
    session.on("reconnecting", (reason) => {
      panel.status.textContent = `reconnecting (${reason})`;
      document.body.dataset.state = "reconnecting";
    });
    session.on("reconnected", showSession);
    await session.subscribe([topic]);
    showSession(session);
  } catch (error) {
    showError(error);
  }
}
var lastReceived = 0;
setInterval(() => {
  if (client !== void 0) {
    panel.rate.textContent = String(client.received - lastReceived);
    lastReceived = client.received;
  }
}, 1e3);
setInterval(() => {
  if (client !== void 0 && !client.closed) {
    client.ping().then(
      (rtt) => {
        panel.rtt.textContent = `${rtt.toFixed(1)} ms`;
      },
      () => {
      }
    );
  }
}, 2e3);
retry.addEventListener("click", () => {
  const previous = client;
  client = void 0;
  previous?.close();
  void connect();
});
addEventListener("pagehide", () => {
  send({ k: "bye" }, true);
  client?.close();
});
panel.room.textContent = room;
panel.name.textContent = token;
requestAnimationFrame(draw);
void connect();
