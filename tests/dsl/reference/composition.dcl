
    function Access( AccessToken) => (HTTPRequest);
    function FanOut(HTTPResponse , Topic) => (HTTPRequests);
    function Render(HTTPResponses )   => (HTMLOutput);
    
    function HTTP(Request) => ( Response) ;
    
    composition RenderLogs(InputAccessToken, InputTopic) => (OutHTMLOutput) {
        Access(AccessToken = all InputAccessToken) => (AuthRequest = HTTPRequest);
        HTTP(Request = each AuthRequest) => (AuthResponse = Response);
        FanOut(HTTPResponse = all AuthResponse, Topic = all InputTopic) => (LogRequests = HTTPRequests);
        HTTP(Request = each LogRequests) => (LogResponses = Response);
        Render(HTTPResponses = all LogResponses) => (OutHTMLOutput = HTMLOutput);
    }
