/**
 * The demo page the coordinator serves at `/`: every open tab is an avatar
 * that follows its mouse on a shared canvas (positions on the unreliable
 * channel), plus a chat on the reliable channel.
 *
 * Everything travels on one topic, `demo/<room>`, as small JSON bodies with
 * a kind field: servers that predate topic names in TOPIC_FW cannot tell a
 * subscriber which topic a message came from, so one topic keeps the demo
 * working with every server. Everything is published with identity, so the
 * names shown are the credentials the server authenticated, not claims.
 *
 * Query parameters: `token` (credentials; default a random guest name),
 * `room`, `server` (a comm server alias) and `coordinator` (a WebSocket URL;
 * default: the coordinator that served this page).
 */

import type { ReceivedMessage } from "/sdk/webrtc-broker.js";
import { BrokerClient, DisconnectedError } from "/sdk/webrtc-broker.js";

type Body = { k: "pos"; x: number; y: number } | { k: "chat"; text: string } | { k: "bye" };

interface Avatar {
  alias: number;
  name: string;
  x: number;
  y: number;
  seen: number;
  color: string;
  item: HTMLLIElement;
}

const SEND_INTERVAL_MS = 33; // at most ~30 positions/s
const HEARTBEAT_MS = 1000; // repeat the position: unreliable frames may be lost
const STALE_MS = 5000;
const RADIUS = 14;

const params = new URLSearchParams(location.search);
const room = params.get("room") || "lobby";
const topic = `demo/${room}`;
const token = params.get("token") ?? `guest-${Math.floor(Math.random() * 10_000)}`;
const wsScheme = location.protocol === "https:" ? "wss:" : "ws:";
const coordinator = params.get("coordinator") || `${wsScheme}//${location.host}`;
const serverParam = params.get("server");

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) {
    throw new Error(`the page has no #${id}`);
  }
  return found as T;
}

const canvas = element<HTMLCanvasElement>("canvas");
const context = canvas.getContext("2d") as CanvasRenderingContext2D;
const avatarList = element<HTMLUListElement>("avatars");
const chatLog = element<HTMLUListElement>("chat-log");
const chatForm = element<HTMLFormElement>("chat-form");
const chatInput = element<HTMLInputElement>("chat-input");
const errorBox = element<HTMLElement>("error");
const retry = element<HTMLButtonElement>("retry");
const panel = {
  status: element<HTMLElement>("status"),
  server: element<HTMLElement>("server"),
  alias: element<HTMLElement>("alias"),
  rtt: element<HTMLElement>("rtt"),
  rate: element<HTMLElement>("rate"),
  peers: element<HTMLElement>("peers"),
  room: element<HTMLElement>("room"),
  name: element<HTMLElement>("name"),
};

const avatars = new Map<number, Avatar>();
let client: BrokerClient | undefined;
let mine: { x: number; y: number } | undefined;
let moved = false;
let lastSent = 0;

/** A stable, distinct colour per alias, as `rgb(r, g, b)` (what getImageData reads back). */
function colorOf(alias: number): string {
  const hue = (alias * 137.508) % 360;
  const [s, l] = [0.65, 0.5];
  const f = (n: number): number => {
    const k = (n + hue / 30) % 12;
    const a = s * Math.min(l, 1 - l);
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return `rgb(${f(0)}, ${f(8)}, ${f(4)})`;
}

function showError(error: unknown): void {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  errorBox.textContent = text;
  errorBox.hidden = false;
  retry.hidden = false;
  panel.status.textContent = "error";
  document.body.dataset.state = "error";
}

function send(body: Body, reliable: boolean): void {
  if (client === undefined || client.closed) {
    return;
  }
  try {
    client.publishIdentity(topic, JSON.stringify(body), { reliable });
  } catch (error) {
    if (!(error instanceof DisconnectedError)) {
      throw error;
    }
    // Reconnecting to another server: this update is lost, the next one will go.
  }
}

// -- avatars --------------------------------------------------------------

function place(alias: number, name: string, x: number, y: number): void {
  let avatar = avatars.get(alias);
  if (avatar === undefined) {
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

function forget(alias: number): void {
  avatars.get(alias)?.item.remove();
  avatars.delete(alias);
  panel.peers.textContent = String(avatars.size);
}

function draw(): void {
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
  if (mine !== undefined && client !== undefined) {
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
    y: Math.min(1, Math.max(0, (event.clientY - box.top) / box.height)),
  };
  moved = true;
});

setInterval(() => {
  const now = performance.now();
  if (mine !== undefined && (moved || now - lastSent > HEARTBEAT_MS)) {
    send({ k: "pos", x: mine.x, y: mine.y }, false);
    moved = false;
    lastSent = now;
  }
}, SEND_INTERVAL_MS);

// -- chat -----------------------------------------------------------------

function addChatLine(who: string, text: string, self: boolean): void {
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
  if (text === "" || client === undefined || client.closed) {
    return;
  }
  send({ k: "chat", text }, true);
  addChatLine(token, text, true);
  chatInput.value = "";
});

// -- receiving ------------------------------------------------------------

function onMessage(message: ReceivedMessage): void {
  let body: Body;
  try {
    body = JSON.parse(message.text) as Body;
  } catch {
    return; // someone else's traffic on this topic
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

// -- the session ----------------------------------------------------------

function showSession(session: BrokerClient): void {
  panel.server.textContent = String(session.serverAlias);
  panel.alias.textContent = String(session.alias);
  panel.status.textContent = "connected";
  document.body.dataset.state = "connected";
  document.body.dataset.alias = String(session.alias);
  document.body.dataset.server = String(session.serverAlias);
}

async function connect(): Promise<void> {
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
    // The SDK moves to another server by itself when this one goes away.
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

let lastReceived = 0;
setInterval(() => {
  if (client !== undefined) {
    panel.rate.textContent = String(client.received - lastReceived);
    lastReceived = client.received;
  }
}, 1000);

setInterval(() => {
  if (client !== undefined && !client.closed) {
    client.ping().then(
      (rtt) => {
        panel.rtt.textContent = `${rtt.toFixed(1)} ms`;
      },
      () => {},
    );
  }
}, 2000);

retry.addEventListener("click", () => {
  const previous = client;
  client = undefined; // so that its close event is not shown as an error
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
